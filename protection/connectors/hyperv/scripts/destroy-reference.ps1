# destroy-reference: drop a reference point the server no longer needs. Called only once a
# newer recovery point is committed on the server, so an RCT id stays usable until then.
#
# $Params: vm_id, reference_point_id (InstanceID of a Msvm_VirtualSystemReferencePoint).
# Result: destroyed (bool; false when it was already gone).

$ErrorActionPreference = 'Stop'
$Namespace = 'root\virtualization\v2'
$JobTimeoutSeconds = 600

# Write-Result, Write-Failure (which ends the script) and Test-IsAccessDenied come from
# _common.ps1, which the server puts in front of this script.
trap {
    if (Test-IsAccessDenied $_) {
        Write-Failure 'AccessDenied' "This account may not manage Hyper-V on $env:COMPUTERNAME ($($_.Exception.Message)). Make it a member of Hyper-V Administrators (and of Administrators for the admin share)."
    }
    break
}

# WMI methods are called with named arguments: the positional order of a method's
# parameters is not something to rely on across Windows versions.
function Invoke-HyperVMethod($Object, [string]$Method, [hashtable]$Arguments) {
    $in = $Object.GetMethodParameters($Method)
    foreach ($key in $Arguments.Keys) { $in[$key] = $Arguments[$key] }
    return $Object.InvokeMethod($Method, $in, $null)
}

$referenceId = [string]$Params.reference_point_id
if ($referenceId -notmatch '^[A-Za-z0-9:{}\\\-]+$') {
    Write-Failure 'InvalidArgument' "'$referenceId' is not a reference point id."
    return
}
$reference = Get-WmiObject -Namespace $Namespace -Class Msvm_VirtualSystemReferencePoint `
    -Filter "InstanceID='$($referenceId.Replace('\', '\\'))'"
if (-not $reference) {
    Write-Result @{ destroyed = $false }
    return
}
$service = Get-WmiObject -Namespace $Namespace -Class Msvm_VirtualSystemReferencePointService
$out = Invoke-HyperVMethod $service 'DestroyReferencePoint' @{ AffectedReferencePoint = $reference.__PATH }
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
Write-Result @{ destroyed = $true }
