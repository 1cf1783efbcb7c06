from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from backupsite.core.permissions import Action, get_for_user, require
from backupsite.core.types import HtmxHttpRequest
from protection.forms.hosts import ConnectionForm, HostConnectionForm, HostForm
from protection.models import Host
from protection.services import hosts as host_service


@require_http_methods(["GET", "POST"])
def host_add(request: HttpRequest) -> HttpResponse:
    require(request, Action.MANAGE)
    form = HostForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        try:
            host, job = host_service.add_host(form.new_host(), request.user, request=request)
        except host_service.HostError as error:
            form.add_error("name", str(error))  # registered by someone else a moment ago
        else:
            messages.success(request, f"Host {host} added; its inventory is being read (job #{job.pk}).")
            return redirect(host)
    return render(request, "protection/host_add.html", {"form": form})


@require_POST
def host_test_connection(request: HtmxHttpRequest) -> HttpResponse:
    require(request, Action.MANAGE)
    form = ConnectionForm(request.POST, request.FILES)
    result = form.try_connection() if form.is_valid() else None
    context = {"connection_form": form, "result": result}
    if request.htmx and not request.htmx.boosted:
        return render(request, "protection/host_add.html#connection-result", context)
    # Unbound, so the page shows the connection result without validating the rest again.
    initial = {
        name: value for name, value in request.POST.items() if name not in ("password", "smb_password")
    }
    return render(request, "protection/host_add.html", {**context, "form": HostForm(initial=initial)})


@require_GET
def host_detail(request: HttpRequest, pk: int) -> HttpResponse:
    host = get_for_user(request, Host.objects.select_related("cluster"), pk=pk)
    machines = host.virtual_machines.present().select_related("data_source__group")
    jobs = host.jobs.all()[:20]
    return render(request, "protection/host_detail.html", {"host": host, "machines": machines, "jobs": jobs})


@require_http_methods(["GET", "POST"])
def host_connection(request: HttpRequest, pk: int) -> HttpResponse:
    host = get_for_user(request, Host.objects.all(), Action.MANAGE, pk=pk)
    initial = {"connection_kind": host.connection_kind, "address": host.address}
    form = HostConnectionForm(request.POST or None, request.FILES or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        job = host_service.change_connection(
            host,
            form.cleaned_data["connection_kind"],
            form.cleaned_data["address"],
            form.credentials(),
            request.user,
            request=request,
        )
        messages.success(request, f"Connection of {host} saved; its inventory is being read (job #{job.pk}).")
        return redirect(host)
    return render(request, "protection/host_connection.html", {"host": host, "form": form})


@require_POST
def host_refresh(request: HttpRequest, pk: int) -> HttpResponse:
    host = get_for_user(request, Host.objects.all(), Action.MANAGE, pk=pk)
    job = host_service.refresh_inventory(host, request.user, request=request)
    messages.success(request, f"Inventory refresh of {host} submitted (job #{job.pk}).")
    return redirect(host)


@require_POST
def host_remove(request: HttpRequest, pk: int) -> HttpResponse:
    host = get_for_user(request, Host.objects.all(), Action.MANAGE, pk=pk)
    try:
        host_service.remove_host(host, request.user, request=request)
    except host_service.HostError as error:
        messages.error(request, str(error))
        return redirect(host)
    messages.success(request, f"Host {host} removed.")
    return redirect("protection:overview")
