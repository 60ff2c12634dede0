# arc-hotpatch: enable_vsm
# Enable Virtual Secure Mode (seed: "Check and enable Virtual Secure Mode"). Takes effect after a reboot.
param(
    [string]$RequestId = ''
)
$ErrorActionPreference = 'Stop'
$key = 'HKLM:\System\CurrentControlSet\Control\DeviceGuard'
if (-not (Test-Path -Path $key)) { New-Item -Path $key -Force | Out-Null }
New-ItemProperty -Path $key -Name 'EnableVirtualizationBasedSecurity' -PropertyType 'Dword' -Value 1 -Force | Out-Null
$value = (Get-ItemProperty -Path $key -Name 'EnableVirtualizationBasedSecurity').EnableVirtualizationBasedSecurity
[ordered]@{ v = 1; script = 'enable_vsm'; request_id = $RequestId; vbs_configured = [int]$value } | ConvertTo-Json -Compress
