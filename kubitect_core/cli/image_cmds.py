"""`kubitect image build|list`: the node images, built offline from the machine's apt sources."""

from __future__ import annotations

import time
from enum import StrEnum

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from kubitect_core.images.cache import list_entries, read_info
from kubitect_core.paths import images_dir, kubitect_home

HOME_HELP = "Kubitect home (default: $KUBITECT_HOME or ~/.kubitect)."
console = Console(highlight=False)

image_app = typer.Typer(
    help="Build and list node images (rootfs for nspawn nodes, qcow2 for libvirt VMs).\n\n"
    "Example: kubitect image build --kind all",
    no_args_is_help=True,
)


class Kind(StrEnum):
    rootfs = "rootfs"
    vm = "vm"
    all = "all"


def _mib(n: int | None) -> str:
    return f"{(n or 0) / 2**20:.0f} MiB"


@image_app.command("build", epilog="Example: kubitect image build --kind all")
def build(
    kind: Kind = typer.Option(Kind.all, "--kind", help="Which image: rootfs, vm or all."),
    with_lb: bool = typer.Option(
        True, "--with-lb/--no-lb", help="Preinstall keepalived and HAProxy in the VM image (left "
        "disabled). The rootfs always has them."
    ),
    home: str | None = typer.Option(None, "--home", help=HOME_HELP),
) -> None:
    """Build the node images once; later calls reuse the cache until the recipe changes.

    Needs root (mmdebstrap --mode=root) and the machine's Debian apt sources.
    """
    from kubitect_core.images.rootfs import ensure_rootfs
    from kubitect_core.images.vm_image import LB_PACKAGES, ensure_vm_image

    root = kubitect_home(home)
    kinds = ["rootfs", "vm"] if kind is Kind.all else [kind.value]
    results: list[tuple[str, float, list[tuple[str, str]], dict]] = []
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
        transient=True,
    ) as bar:
        for k in kinds:
            task = bar.add_task(f"{k}: checking the cache", total=None)

            def say(msg: str, task=task, k=k) -> None:
                bar.update(task, description=f"{k}: {msg[:100]}")
                if not msg.startswith("I: "):
                    bar.console.print(f"[dim]{k}:[/dim] {msg}")

            started = time.monotonic()
            try:
                if k == "rootfs":
                    path = ensure_rootfs(root, progress=say)
                    paths = [("rootfs", str(path))]
                    info = read_info(path)
                else:
                    img = ensure_vm_image(root, extra_packages=LB_PACKAGES if with_lb else (),
                                          progress=say)
                    info = read_info(img.qcow2.parent)
                    paths = [("qcow2", str(img.qcow2)), ("kernel", str(img.kernel)),
                             ("initrd", str(img.initrd))]
            except (RuntimeError, OSError) as exc:
                bar.stop()
                console.print(f"[red]error:[/red] building the {k} image failed: {exc}")
                raise typer.Exit(1) from None
            bar.remove_task(task)
            results.append((k, time.monotonic() - started, paths, info))
    for k, seconds, paths, info in results:
        size = _mib(info.get("size_bytes"))
        if seconds < 1 and info:
            console.print(f"[green]✔[/green] {k} cached ({size}, built in {info.get('build_seconds')} s "
                          f"at {info.get('built_at')})")
        else:
            console.print(f"[green]✔[/green] {k} built in {seconds:.1f} s ({size})")
        for label, p in paths:
            console.print(f"    {label:7} {p}")
    if "vm" in kinds:
        console.print("Use the VM image in a config as  nodeTemplate.os.source: <qcow2 path above>")


@image_app.command("list", epilog="Example: kubitect image list")
def list_images(home: str | None = typer.Option(None, "--home", help=HOME_HELP)) -> None:
    """Show the cached images with their size and build time."""
    entries = list_entries(images_dir(kubitect_home(home)))
    if not entries:
        console.print("no images built yet: run  kubitect image build")
        return
    table = Table("kind", "recipe", "size", "built in", "built at")
    table.add_column("path", overflow="fold")
    for e in entries:
        path = e.path / "disk.qcow2" if e.kind == "vm" else e.path
        table.add_row(
            e.kind, e.hash, _mib(e.info.get("size_bytes")),
            f"{e.info.get('build_seconds', '?')} s", str(e.info.get("built_at", "?")), str(path),
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    """Adds `kubitect image ...` to the root app."""
    app.add_typer(image_app, name="image")
