# destroy-reference: drop a reference point the server no longer needs. Called only once a
# newer recovery point is committed on the server, so an RCT id stays usable until then.
#
# $Params: vm_id, reference_point_id (InstanceID of a Msvm_VirtualSystemReferencePoint).
# Result: destroyed (bool; false when it was already gone).

$ErrorActionPreference = 'Stop'
$Namespace = 'root\virtualization\v2'
$JobTimeoutSeconds = 600

function Write-Ok($Result) {
    ConvertTo-Json -Depth 5 -Compress -InputObject @{ ok = $true; result = $Result }
}

function Write-Failure([string]$Kind, [string]$Message) {
    ConvertTo-Json -Depth 5 -Compress -InputObject @{ ok = $false; error = @{ kind = $Kind; message = $Message } }
}

$referenceId = [string]$Params.reference_point_id
if ($referenceId -notmatch '^[A-Za-z0-9:{}\\\-]+$') {
    Write-Failure 'InvalidArgument' "'$referenceId' is not a reference point id."
    return
}
$reference = Get-WmiObject -Namespace $Namespace -Class Msvm_VirtualSystemReferencePoint `
    -Filter "InstanceID='$($referenceId.Replace('\', '\\'))'"
if (-not $reference) {
    Write-Ok @{ destroyed = $false }
    return
}
$service = Get-WmiObject -Namespace $Namespace -Class Msvm_VirtualSystemReferencePointService
$out = $service.DestroyReferencePoint($reference.__PATH)
if ($out.ReturnValue -eq 4096) {
    $job = [wmi]$out.Job
    $deadline = (Get-Date).AddSeconds($JobTimeoutSeconds)
    while ($job.JobState -in 2, 3, 4, 5, 6) {
        if ((Get-Date) -gt $deadline) { throw "Destroying reference point $referenceId did not finish in time." }
        Start-Sleep -Milliseconds 500
        $job.Get()
    }
    if ($job.JobState -ne 7) { throw "Destroying reference point $referenceId failed: $($job.ErrorDescription)" }
} elseif ($out.ReturnValue -ne 0) {
    throw "Destroying reference point $referenceId failed (return value $($out.ReturnValue))."
}
Write-Ok @{ destroyed = $true }
