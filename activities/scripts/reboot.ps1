# arc-hotpatch: reboot
# Schedule a restart so that this run finishes and reports before the machine goes down.
param(
    [string]$RequestId = '',
    [int]$RebootDelaySeconds = 60
)
$ErrorActionPreference = 'Stop'
if ($RebootDelaySeconds -lt 0) { throw 'RebootDelaySeconds must be >= 0' }
& shutdown.exe /r /t $RebootDelaySeconds /d p:2:17 /c 'Hotpatch enablement (arc-hotpatch)'
if ($LASTEXITCODE -ne 0) { throw "shutdown.exe failed with exit code $LASTEXITCODE" }
[ordered]@{
    v            = 1
    script       = 'reboot'
    request_id   = $RequestId
    reboot_in_s  = $RebootDelaySeconds
    requested_at = (Get-Date).ToUniversalTime().ToString('yyyy-MM-ddTHH:mm:ssZ')
} | ConvertTo-Json -Compress
