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
