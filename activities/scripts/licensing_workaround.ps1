# arc-hotpatch: licensing_workaround
# October 2025 feature-licensing workaround, seed "Option 2", without the interactive prompt.
# Stopping himds cuts the agent off, so the result may never be reported: the caller verifies by
# re-reading facts after the reboot this script schedules (the mitigation needs that reboot).
param(
    [string]$RequestId = '',
    [int]$RebootDelaySeconds = 60
)
$ErrorActionPreference = 'Stop'
if ($RebootDelaySeconds -lt 0) { throw 'RebootDelaySeconds must be >= 0' }
$overrides = 'HKLM:\SYSTEM\CurrentControlSet\Policies\Microsoft\FeatureManagement\Overrides'
$subscriptions = 'HKLM:\SOFTWARE\Microsoft\Windows NT\CurrentVersion\Subscriptions'

# Schedule the reboot first: once himds stops, nothing else can be sent to this machine.
& shutdown.exe /r /t $RebootDelaySeconds /d p:2:17 /c 'Hotpatch licensing workaround (arc-hotpatch)'
Stop-Service -Name 'himds' -Force
New-Item -Path $overrides -Force | Out-Null
New-ItemProperty -Path $overrides -PropertyType 'Dword' -Name '4264695439' -Value 1 -Force | Out-Null
$mutexRemoved = $false
$current = Get-ItemProperty -Path $subscriptions -ErrorAction SilentlyContinue
if ($current -and $null -ne $current.DeviceLicensingServiceCommandMutex) {
    Remove-ItemProperty -Path $subscriptions -Name 'DeviceLicensingServiceCommandMutex'
    $mutexRemoved = $true
}
[ordered]@{
    v                  = 1
    script             = 'licensing_workaround'
    request_id         = $RequestId
    licensing_override = 1
    mutex_removed      = $mutexRemoved
    reboot_in_s        = $RebootDelaySeconds
} | ConvertTo-Json -Compress
