"""`kubitect image build|list|import|forget`: node images built offline from the machine's apt
sources, and the base images that serve distro URLs (downloaded, or imported for offline sites)."""

from __future__ import annotations

import time
from enum import StrEnum

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from kubitect_core.images.cache import list_entries, read_info
from kubitect_core.paths import images_dir, kubitect_home

HOME_HELP = "Kubitect home (default: $KUBITECT_HOME or ~/.kubitect)."
console = Console(highlight=False)

image_app = typer.Typer(
    help="Build and list node images (rootfs for nspawn nodes, qcow2 for libvirt VMs); import a "
    "distro image for an offline site.\n\n"
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
    """Show the built images (size, build time) and the base images serving distro URLs."""
    from kubitect_core.images import base_cache

    root = kubitect_home(home)
    entries = list_entries(images_dir(root))
    bases = base_cache.entries(root)
    if bases:
        _base_table(bases)
    if not entries:
        if not bases:
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


def _distro_url(target: str) -> tuple[str, str]:
    """(label for messages, URL) of a distro name or a URL; exit 2 naming the distros otherwise."""
    from kubitect_core.config import DISTRO_PRESETS

    if "://" in target:
        return target, target
    if target in DISTRO_PRESETS:
        return target, DISTRO_PRESETS[target][0]
    console.print(f"[red]error:[/red] unknown distro {escape(target)!r}; one of: {', '.join(sorted(DISTRO_PRESETS))} "
                  "(or an image URL)")
    raise typer.Exit(2)


def _base_table(bases) -> None:
    from kubitect_core.config import DISTRO_PRESETS

    by_url = {url: name for name, (url, _nic) in DISTRO_PRESETS.items()}
    table = Table("distro", title="base images (by URL)")
    table.add_column("serves URL", overflow="fold")
    for col in ("image", "origin", "checksum", "verified by"):
        table.add_column(col, overflow="fold")
    for e in bases:
        table.add_row(by_url.get(e.url, "-"), escape(e.url), escape(e.label or e.path.name),
                      escape(e.imported_from if e.origin == "import" else "download"),
                      f"{e.algo} {e.digest[:16]}…", e.verified_by)
    console.print(table)


@image_app.command("import", epilog="Example: kubitect image import ubuntu22 ./jammy-server-cloudimg-amd64.img "
                   "--sha256 <hex from the distro's SHA256SUMS>")
def import_(
    target: str = typer.Argument(..., help="The distro (ubuntu22, debian12, ...) or image URL this file serves."),
    source: str = typer.Argument(..., help="The image: a local file, or a URL of a local mirror."),
    sha256: str = typer.Option(None, "--sha256", help="Expected sha256 (from the distro's checksum file); "
                               "nothing is imported when the file differs."),
    label: str = typer.Option("", "--label", help="What the image really is, shown wherever it is used "
                              "(say so when it stands in for another distro)."),
    home: str | None = typer.Option(None, "--home", help=HOME_HELP),
) -> None:
    """Serve a distro's image from a local file or mirror (offline sites), its checksum recorded.

    The config stays as it is: `distro: ubuntu22` (or an `os.source` URL) is served by the import
    whenever the distro's server cannot be reached, and the file is hashed again before every use.
    """
    from kubitect_core.images import base_cache

    name, url = _distro_url(target)
    try:
        entry = base_cache.import_image(url, source, kubitect_home(home), sha256=sha256, label=label,
                                        progress=lambda m: console.print(f"[dim]{escape(m)}[/dim]"))
    except base_cache.ImageError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None
    console.print(f"[green]✔[/green] {escape(name)} ({escape(url)}) is served by {escape(entry.describe())}")
    if not sha256:
        console.print("  its sha256 was computed here and recorded; pass --sha256 to check it against the "
                      "distro's published checksum")


@image_app.command("forget", epilog="Example: kubitect image forget ubuntu22")
def forget(
    target: str = typer.Argument(..., help="The distro or image URL whose cached images to remove."),
    home: str | None = typer.Option(None, "--home", help=HOME_HELP),
) -> None:
    """Remove the downloaded and imported images of a distro (or URL) from the cache."""
    from kubitect_core.images import base_cache

    name, url = _distro_url(target)
    gone = base_cache.remove(kubitect_home(home), url)
    console.print(f"[green]✔[/green] {len(gone)} cached image(s) of {escape(name)} removed")


def register(app: typer.Typer) -> None:
    """Adds `kubitect image ...` to the root app."""
    app.add_typer(image_app, name="image")
