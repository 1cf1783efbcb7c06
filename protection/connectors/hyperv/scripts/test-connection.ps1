# test-connection: is this a Hyper-V host, and may this account manage it?
# Result: facts about the host and the account (see transport.py _judge_facts).

$identity = [Security.Principal.WindowsIdentity]::GetCurrent()
$principal = New-Object Security.Principal.WindowsPrincipal $identity
$isAdmin = $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)
# Hyper-V Administrators by its well-known SID: the group's name is localized.
$isHyperVAdmin = $principal.IsInRole((New-Object Security.Principal.SecurityIdentifier 'S-1-5-32-578'))
$computer = $env:COMPUTERNAME

$vmms = Get-Service -Name vmms -ErrorAction SilentlyContinue
if ($null -eq $vmms) {
    Write-Failure 'NotHyperV' "$computer does not have the Hyper-V role (no Virtual Machine Management service)."
}
if ([string]$vmms.Status -ne 'Running') {
    Write-Failure 'NotHyperV' "The Hyper-V Virtual Machine Management service on $computer is $([string]$vmms.Status), not running."
}
$module = Get-Module -ListAvailable -Name Hyper-V | Sort-Object Version -Descending | Select-Object -First 1
if ($null -eq $module) {
    Write-Failure 'NotHyperV' "The Hyper-V PowerShell module is not installed on $computer (Install-WindowsFeature Hyper-V-PowerShell)."
}
if (-not $isAdmin -and -not $isHyperVAdmin) {
    Write-Failure 'AccessDenied' "$($identity.Name) is neither a local Administrator nor a member of Hyper-V Administrators on $computer."
}

# The WMI namespace the backup itself uses (checkpoints, change tracking).
try {
    $null = Get-CimInstance -Namespace 'root\virtualization\v2' -ClassName Msvm_VirtualSystemManagementService
} catch {
    if (Test-IsAccessDenied $_) {
        Write-Failure 'AccessDenied' "$($identity.Name) may not read the WMI namespace root\virtualization\v2 on ${computer}: $($_.Exception.Message)"
    }
    Write-Failure 'NotHyperV' "The WMI namespace root\virtualization\v2 cannot be read on ${computer}: $($_.Exception.Message)"
}
try {
    $vmHost = Get-VMHost
} catch {
    if (Test-IsAccessDenied $_) {
        Write-Failure 'AccessDenied' "$($identity.Name) may not manage Hyper-V on ${computer}: $($_.Exception.Message)"
    }
    throw
}

$system = Get-CimInstance -ClassName Win32_ComputerSystem
$facts = Get-HostOsFacts
$facts.computer_name = $computer
$facts.fqdn = [string]$vmHost.FullyQualifiedDomainName
$facts.part_of_domain = [bool]$system.PartOfDomain
$facts.domain = [string]$system.Domain
$facts.powershell_version = $PSVersionTable.PSVersion.ToString()
$facts.user = $identity.Name
$facts.is_admin = [bool]$isAdmin
$facts.is_hyperv_admin = [bool]$isHyperVAdmin
$facts.hyperv_module_version = $module.Version.ToString()
$facts.wmi_namespace = $true
$facts.cluster_name = Get-ClusterNameOrNull
Write-Result $facts
