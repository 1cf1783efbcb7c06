# destroy-reference: drop a reference point the server no longer needs. Called only once a
# newer recovery point is committed on the server, so an RCT id stays usable until then.
#
# $Params: vm_id, reference_point_id (InstanceID of a Msvm_VirtualSystemReferencePoint).
# Result: destroyed (bool; false when it was already gone).

$ErrorActionPreference = 'Stop'
$Namespace = 'root\virtualization\v2'
$JobTimeoutSeconds = 600

# Write-Result, Write-Failure (which ends the script) and Stop-IfHyperVAccessDenied come
# from _common.ps1, which the server puts in front of this script.
trap {
    Stop-IfHyperVAccessDenied $_
    break
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
[void](Wait-HyperVJob $out "Destroying reference point $referenceId" $JobTimeoutSeconds)
Write-Result @{ destroyed = $true }
