# Shared helpers, put in front of every script by the backup server (envelope.py).
# Runs under Windows PowerShell 5.1 (Windows Server 2016-2025): no '??', no ternary.
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
# Windows PowerShell 5.1 can give arrays an extra 'Count' member that ConvertTo-Json
# would serialise as {"value": [...], "Count": n}; drop it so arrays stay arrays.
Remove-TypeData -TypeName System.Array -ErrorAction SilentlyContinue

function Write-Result {
    # The one JSON document the backup server reads from stdout.
    param($Value)
    $json = ConvertTo-Json -Depth 5 -Compress -InputObject @{ ok = $true; result = $Value }
    [Console]::Out.Write($json)
    [Console]::Out.Flush()
}

function Write-Failure {
    # A failure this script expected: reported as data, exit code 0.
    param([string]$Kind, [string]$Message)
    $json = ConvertTo-Json -Depth 5 -Compress -InputObject @{ ok = $false; error = @{ kind = $Kind; message = $Message } }
    [Console]::Out.Write($json)
    [Console]::Out.Flush()
    exit 0
}

function Test-IsAccessDenied {
    # True when an error record means "this account may not do that".
    param($ErrorRecord)
    $exception = $ErrorRecord.Exception
    while ($null -ne $exception) {
        if ($exception -is [System.UnauthorizedAccessException]) { return $true }
        # CimException by name: its assembly is not loaded in every session.
        if ($exception.GetType().FullName -eq 'Microsoft.Management.Infrastructure.CimException' -and [string]$exception.NativeErrorCode -eq 'AccessDenied') { return $true }
        $exception = $exception.InnerException
    }
    $id = [string]$ErrorRecord.FullyQualifiedErrorId
    return ($id -match 'AccessDenied|Unauthorized|PermissionDenied' -or [string]$ErrorRecord.CategoryInfo.Category -eq 'PermissionDenied')
}

function ConvertTo-IsoDate {
    param($Date)
    if ($null -eq $Date) { return $null }
    return ([datetime]$Date).ToUniversalTime().ToString('o')
}

function Get-HostOsFacts {
    # OS caption, version and build of this host, and the integration services version it ships.
    $os = Get-CimInstance -ClassName Win32_OperatingSystem
    $version = [Version]$os.Version
    $icVersion = '{0}.{1}.{2}' -f $version.Major, $version.Minor, $version.Build
    if ($version.Build -lt 10000) {
        # Windows Server 2012 R2 ships the guest components as vmguest.iso, with their own version.
        try {
            $key = 'HKLM:\SOFTWARE\Microsoft\Windows NT\CurrentVersion\Virtualization\GuestInstaller\Version'
            $icVersion = [string](Get-ItemProperty -Path $key -Name 'Microsoft-Hyper-V-Guest-Installer').'Microsoft-Hyper-V-Guest-Installer'
        } catch { $null = $_ }
    }
    return @{
        os_caption = [string]$os.Caption
        os_version = [string]$os.Version
        os_build = [int]$os.BuildNumber
        integration_services_version = $icVersion
    }
}

function Get-ClusterNameOrNull {
    # The failover cluster this host belongs to, or $null.
    if (-not (Get-Module -ListAvailable -Name FailoverClusters)) { return $null }
    try {
        Import-Module FailoverClusters -ErrorAction Stop
        $cluster = Get-Cluster -ErrorAction Stop
        return [string]$cluster.Name
    } catch {
        return $null
    }
}

function Stop-IfHyperVAccessDenied {
    # For a script's trap: an error meaning "this account may not manage Hyper-V" becomes
    # the AccessDenied failure (Write-Failure ends the script); other errors are left to the trap.
    param($ErrorRecord)
    if (Test-IsAccessDenied $ErrorRecord) {
        Write-Failure 'AccessDenied' "This account may not manage Hyper-V on $env:COMPUTERNAME ($($ErrorRecord.Exception.Message)). Make it a member of Hyper-V Administrators (and of Administrators for the admin share)."
    }
}

# WMI methods are called with named arguments: the positional order of a method's
# parameters is not something to rely on across Windows versions.
function Invoke-HyperVMethod($Object, [string]$Method, [hashtable]$Arguments) {
    $in = $Object.GetMethodParameters($Method)
    foreach ($key in $Arguments.Keys) { $in[$key] = $Arguments[$key] }
    return $Object.InvokeMethod($Method, $in, $null)
}

# A WMI method either finishes at once (0) or starts a Msvm_ConcreteJob (4096) that we
# poll until JobState 7 (Completed); anything else is a failure with the job's own words.
function Wait-HyperVJob($Out, [string]$What, [int]$TimeoutSeconds = 1800) {
    if ($Out.ReturnValue -eq 0) { return $null }
    if ($Out.ReturnValue -ne 4096) { throw "$What failed (return value $($Out.ReturnValue))." }
    $job = [wmi]$Out.Job
    $deadline = (Get-Date).AddSeconds($TimeoutSeconds)
    while ($job.JobState -in 2, 3, 4, 5, 6) {
        if ((Get-Date) -gt $deadline) { throw "$What did not finish within $TimeoutSeconds seconds." }
        Start-Sleep -Milliseconds 500
        $job.Get()
    }
    if ($job.JobState -ne 7) {
        throw "$What failed: $($job.ErrorDescription) (error $($job.ErrorCode), job state $($job.JobState))."
    }
    return $job
}
