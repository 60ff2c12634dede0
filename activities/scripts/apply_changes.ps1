# arc-hotpatch: apply_changes
# Every change that needs the one reboot, then that reboot, in one run: enable Virtual Secure Mode
# (seed: "Check and enable Virtual Secure Mode"), apply the October 2025 feature-licensing workaround
# (seed "Known issues", Option 2, without its interactive prompt), schedule the restart.
# The workaround stops himds, which cuts the agent off: this run may never report its result, so the
# caller verifies by re-reading the machine after the reboot. A failure before the restart is
# scheduled changes nothing that needs it and is reported (exit code 1).
param(
    [string]$RequestId = '',
    [int]$EnableVsm = 0,
    [int]$ApplyWorkaround = 0,
    [int]$RebootDelaySeconds = 60
)
$ErrorActionPreference = 'Stop'
if ($RebootDelaySeconds -lt 0) { throw 'RebootDelaySeconds must be >= 0' }
$deviceGuard = 'HKLM:\System\CurrentControlSet\Control\DeviceGuard'
$overrides = 'HKLM:\SYSTEM\CurrentControlSet\Policies\Microsoft\FeatureManagement\Overrides'
$subscriptions = 'HKLM:\SOFTWARE\Microsoft\Windows NT\CurrentVersion\Subscriptions'

$vbsConfigured = $null
if ($EnableVsm -eq 1) {
    if (-not (Test-Path -Path $deviceGuard)) { New-Item -Path $deviceGuard -Force | Out-Null }
    New-ItemProperty -Path $deviceGuard -Name 'EnableVirtualizationBasedSecurity' -PropertyType 'Dword' -Value 1 -Force | Out-Null
    $vbsConfigured = [int](Get-ItemProperty -Path $deviceGuard -Name 'EnableVirtualizationBasedSecurity').EnableVirtualizationBasedSecurity
}

# The restart next: once himds stops, nothing else can be sent to this machine. The request time is
# kept in the registry first, so a later run that finds the restart still pending waits for it
# (readiness reports it) instead of asking for another one.
$requestedAt = (Get-Date).ToUniversalTime().ToString('yyyy-MM-ddTHH:mm:ssZ')
$ourKey = 'HKLM:\SOFTWARE\arc-hotpatch'
if (-not (Test-Path -Path $ourKey)) { New-Item -Path $ourKey -Force | Out-Null }
New-ItemProperty -Path $ourKey -Name 'RebootRequestedAt' -PropertyType 'String' -Value $requestedAt -Force | Out-Null
& shutdown.exe /r /t $RebootDelaySeconds /d p:2:17 /c 'Hotpatch enablement (arc-hotpatch)'
if ($LASTEXITCODE -ne 0) { throw "shutdown.exe failed with exit code $LASTEXITCODE" }

$override = $null
$mutexRemoved = $false
if ($ApplyWorkaround -eq 1) {
    Stop-Service -Name 'himds' -Force
    New-Item -Path $overrides -Force | Out-Null
    New-ItemProperty -Path $overrides -PropertyType 'Dword' -Name '4264695439' -Value 1 -Force | Out-Null
    $override = 1
    $current = Get-ItemProperty -Path $subscriptions -ErrorAction SilentlyContinue
    if ($current -and $null -ne $current.DeviceLicensingServiceCommandMutex) {
        Remove-ItemProperty -Path $subscriptions -Name 'DeviceLicensingServiceCommandMutex'
        $mutexRemoved = $true
    }
}
[ordered]@{
    v                  = 1
    script             = 'apply_changes'
    request_id         = $RequestId
    vbs_configured     = $vbsConfigured
    licensing_override = $override
    mutex_removed      = $mutexRemoved
    reboot_in_s        = $RebootDelaySeconds
    requested_at       = $requestedAt
} | ConvertTo-Json -Compress
