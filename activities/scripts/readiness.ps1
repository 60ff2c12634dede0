# arc-hotpatch: readiness
# Read-only Hotpatch readiness facts. Prints one compact JSON line (Run Command keeps only the last 4 KB).
param(
    [string]$RequestId = '',
    # The KBs whose presence tells same-build updates apart (from the baselines data), comma-separated.
    [string]$RelevantKbs = 'KB5066835,KB5070893,KB5070881'
)
$ErrorActionPreference = 'Stop'

function Get-RegValue([string]$Path, [string]$Name) {
    $item = Get-ItemProperty -Path $Path -Name $Name -ErrorAction SilentlyContinue
    if ($null -eq $item) { return $null }
    return $item.$Name
}

$cv = 'HKLM:\SOFTWARE\Microsoft\Windows NT\CurrentVersion'
$build = [int](Get-RegValue $cv 'CurrentBuild')
$ubr = [int](Get-RegValue $cv 'UBR')

$vbsStatus = $null
try {
    $dg = Get-CimInstance -Namespace 'root/Microsoft/Windows/DeviceGuard' -ClassName 'Win32_DeviceGuard'
    $vbsStatus = [int]$dg.VirtualizationBasedSecurityStatus
} catch { $vbsStatus = $null }

# Firmware type from more than one signal (a session may lack $env:firmware_type): the kernel32 API first, then
# the environment, then the SecureBoot State key (present on UEFI machines only). Which one decided is reported;
# when none answers the firmware is 'Unknown' (a human looks, the hardware is not judged unfit).
$firmware = 'Unknown'
$firmwareSignal = 'none'
try {
    if (-not ('ArcHotpatch.Firmware' -as [type])) {
        Add-Type -Namespace 'ArcHotpatch' -Name 'Firmware' -MemberDefinition '[DllImport("kernel32.dll")] public static extern bool GetFirmwareType(ref uint FirmwareType);'
    }
    [uint32]$firmwareCode = 0
    if ([ArcHotpatch.Firmware]::GetFirmwareType([ref]$firmwareCode)) {
        if ($firmwareCode -eq 2) { $firmware = 'UEFI'; $firmwareSignal = 'GetFirmwareType' }
        elseif ($firmwareCode -eq 1) { $firmware = 'BIOS'; $firmwareSignal = 'GetFirmwareType' }
    }
} catch { $firmwareSignal = 'none' }
if ($firmware -eq 'Unknown' -and $env:firmware_type) {
    $firmware = [string]$env:firmware_type
    $firmwareSignal = 'env:firmware_type'
}
if ($firmware -eq 'Unknown' -and (Test-Path 'HKLM:\SYSTEM\CurrentControlSet\Control\SecureBoot\State')) {
    $firmware = 'UEFI'
    $firmwareSignal = 'SecureBoot\State'
}
$secureBoot = $null
try { $secureBoot = [bool](Confirm-SecureBootUEFI) } catch { $secureBoot = $false }

$overrides = 'HKLM:\SYSTEM\CurrentControlSet\Policies\Microsoft\FeatureManagement\Overrides'
$override = Get-RegValue $overrides '4264695439'
$mutex = Get-RegValue "$cv\Subscriptions" 'DeviceLicensingServiceCommandMutex'
$vbsConfigured = Get-RegValue 'HKLM:\System\CurrentControlSet\Control\DeviceGuard' 'EnableVirtualizationBasedSecurity'

$himds = Get-Service -Name 'himds' -ErrorAction SilentlyContinue
$himdsState = if ($himds) { [string]$himds.Status } else { 'Missing' }
$os = Get-CimInstance -ClassName 'Win32_OperatingSystem'
$lastBoot = $os.LastBootUpTime.ToUniversalTime().ToString('yyyy-MM-ddTHH:mm:ssZ')

# A restart already pending: the one our apply_changes asked for (its request is newer than the last
# boot), and Windows' own signals (servicing, Windows Update, files to replace at boot).
$pending = @()
$ourRequest = Get-RegValue 'HKLM:\SOFTWARE\arc-hotpatch' 'RebootRequestedAt'
if ($ourRequest -and ([datetime]::Parse($ourRequest).ToUniversalTime() -gt $os.LastBootUpTime.ToUniversalTime())) {
    $pending += 'arc_hotpatch'
}
if (Test-Path 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing\RebootPending') {
    $pending += 'component_servicing'
}
if (Test-Path 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update\RebootRequired') {
    $pending += 'windows_update'
}
if ($null -ne (Get-RegValue 'HKLM:\SYSTEM\CurrentControlSet\Control\Session Manager' 'PendingFileRenameOperations')) {
    $pending += 'file_rename'
}

$relevantKbs = @($RelevantKbs -split ',' | ForEach-Object { $_.Trim().ToUpperInvariant() } | Where-Object { $_ })
$hotfixes = @(Get-HotFix | Where-Object { $relevantKbs -contains $_.HotFixID } | ForEach-Object { $_.HotFixID })

[ordered]@{
    v                  = 1
    script             = 'readiness'
    request_id         = $RequestId
    build              = $build
    ubr                = $ubr
    edition_id         = [string](Get-RegValue $cv 'EditionID')
    product_name       = [string](Get-RegValue $cv 'ProductName')
    installation_type  = [string](Get-RegValue $cv 'InstallationType')
    vbs_status         = $vbsStatus
    vbs_configured     = $vbsConfigured
    firmware           = $firmware
    firmware_signal    = $firmwareSignal
    secure_boot        = $secureBoot
    licensing_override = $override
    license_mutex      = ($null -ne $mutex)
    himds              = $himdsState
    last_boot          = $lastBoot
    hotfixes           = $hotfixes
    reboot_pending     = @($pending)
} | ConvertTo-Json -Compress
