"""Build the offline installers: `./hcp package --arch arm64|armhf|amd64` writes
`dist/hcp-device_<version>_<arch>.deb` and `dist/hcp-server_<version>_<arch>.deb`.

Each package carries every wheel its programs need for that architecture and Python
3.11 (Debian bookworm's python3), so `apt install ./hcp-device_….deb` needs no network
on the Pi. The maintainer scripts (packaging/*.in) build the virtualenv from those
wheels at install time; docs/packaging.md says why and what each script does.

Run as a script, never imported: this folder must not become the `packaging` package
that pip and pytest import (it has no __init__.py for that reason). What the packages are
(architectures, contents, relations) is packaging/hcp_deb_packages.py beside it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "packaging"
# The folder is on the path when this runs as a script; the tests load this file by its
# path, so add it (last, so that nothing here hides an installed module).
sys.path.append(str(HERE))

from hcp_deb_packages import (  # noqa: E402 - needs the path above
    ARCHES,
    MAINTAINER,
    PACKAGES,
    PYTHON_DEPENDS,
    PYTHON_VERSION,
    Arch,
    Package,
)


class BuildError(Exception):
    """A package cannot be built; the message says which input and why."""


def say(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


def run(*args: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise BuildError(f"{' '.join(map(str, args[:4]))} … failed:\n"
                         f"{(done.stdout + done.stderr).strip()[-3000:]}")
    return done.stdout


def normalise(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_pin(path: Path) -> tuple[str, str]:
    """(name, version) from a wheel's file name (PEP 427: name-version-…whl)."""
    name, version = path.name.split("-")[:2]
    return normalise(name), version


def project() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        data: dict[str, object] = tomllib.load(f)["project"]
    return data


def requirements(package: Package) -> list[str]:
    """The package's top-level requirements: the core dependencies and its extra."""
    meta = project()
    core = meta.get("dependencies", [])
    extras = meta.get("optional-dependencies", {})
    assert isinstance(core, list) and isinstance(extras, dict)
    if package.extra not in extras:
        raise BuildError(f"pyproject.toml: no extra {package.extra!r} for {package.name}")
    return [*core, *extras[package.extra], *package.more_requirements]


def pip(*args: str | Path) -> str:
    return run(sys.executable, "-m", "pip", "--disable-pip-version-check", *args)


def download(arch: Arch, into: Path, *reqs: str, deps: bool = True) -> None:
    platform = [a for tag in arch.platforms() for a in ("--platform", tag)]
    try:
        pip("download", "--quiet", "--dest", into, "--only-binary=:all:",
            "--python-version", PYTHON_VERSION, "--implementation", "cp", *platform,
            *([] if deps else ["--no-deps"]), *reqs)
    except BuildError as e:
        raise BuildError(f"no {arch.machine} wheels for Python {PYTHON_VERSION} of "
                         f"{' '.join(reqs)}: {e}") from None


def wheelhouse(package: Package, arch: Arch, into: Path, work: Path) -> list[str]:
    """Fill `into` with the wheels for `package` on `arch`; return the names that come
    from Debian packages instead (armhf)."""
    reqs = requirements(package)
    system: list[str] = []
    if not arch.resolve_as:
        download(arch, into, *reqs)
    else:
        # pip resolves on the reference machine, where every wheel exists; the same
        # versions are then fetched for this one, except those the system provides.
        reference = work / f"resolve-{package.name}-{arch.resolve_as}"
        reference.mkdir()
        download(ARCHES[arch.resolve_as], reference, *reqs)
        pins = sorted(wheel_pin(w) for w in reference.glob("*.whl"))
        system = [n for n, _ in pins if n in arch.from_system]
        for name, version in pins:
            if name in system:
                continue
            try:
                download(arch, into, f"{name}=={version}", deps=False)
            except BuildError:
                # That version has only binary wheels for other machines (cbor2 6.x):
                # the newest release with a wheel for this one. pip checks the
                # dependents' version ranges when it installs, on the device.
                say(f"{name} {version}: no {arch.machine} wheel; taking the newest that has one")
                download(arch, into, name, deps=False)
    download(arch, into, "pip", deps=False)  # runs the install, from its own wheel
    return system


def build_own_wheel(into: Path, work: Path) -> Path:
    """Our own wheel, built from a copy of the tree (the work tree stays clean)."""
    source = work / "source"
    ignore = shutil.ignore_patterns(".git", ".venv", "dist", "build", "*.egg-info",
                                    "__pycache__", ".*_cache", ".hypothesis", "tests",
                                    "bench", "docs")
    shutil.copytree(ROOT, source, ignore=ignore)
    pip("wheel", "--quiet", "--no-deps", "--wheel-dir", into, source)
    wheels = list(into.glob("hcp_evaluator-*.whl"))
    if len(wheels) != 1:
        raise BuildError(f"expected one hcp_evaluator wheel in {into}, found {wheels}")
    return wheels[0]


def fill(template: Path, values: dict[str, str]) -> str:
    """A maintainer script or text template with its @NAME@ placeholders filled; an
    unknown or unfilled placeholder is an error."""
    text = template.read_text(encoding="utf-8")
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise BuildError(f"{template}: placeholders without a value: {sorted(set(left))}")
    return text


def unit_for_package(path: Path, package: Package) -> str:
    """The unit as shipped in systemd/, pointed at the package's venv and docs."""
    text = path.read_text(encoding="utf-8")
    venv = f"/opt/hcp/{package.component}/venv/bin/"
    text, n = re.subn(r"^(ExecStart=)/opt/hcp/venv/bin/", rf"\g<1>{venv}", text, flags=re.M)
    if n != 1:
        raise BuildError(f"{path}: expected one ExecStart=/opt/hcp/venv/bin/…, found {n}")
    return re.sub(r"^(Documentation=)file:///opt/hcp/src/docs/",
                  rf"\g<1>file:///usr/share/doc/{package.name}/", text, flags=re.M)


def sysusers_for_package(package: Package) -> str:
    """The lines of systemd/hcp.sysusers.conf that create this package's user."""
    lines = ["# Created by the " + package.name + " package from systemd/hcp.sysusers.conf."]
    for line in (ROOT / "systemd/hcp.sysusers.conf").read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] in ("u", "g", "m") and fields[1] == package.user:
            lines.append(line)
    if not any(line.startswith("u") for line in lines):
        raise BuildError(f"systemd/hcp.sysusers.conf has no 'u {package.user}' line")
    return "\n".join(lines) + "\n"


def install_file(text_or_path: str | Path, dest: Path, mode: int = 0o644) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text_or_path, Path):
        if not text_or_path.is_file():
            raise BuildError(f"{text_or_path}: missing (the package ships it)")
        shutil.copyfile(text_or_path, dest)
    else:
        dest.write_text(text_or_path, encoding="utf-8")
    dest.chmod(mode)


def stage(package: Package, arch: Arch, version: str, work: Path, own_wheel: Path) -> Path:
    root = work / f"{package.name}_{arch.debian}"
    home = root / "opt/hcp" / package.component
    wheels = home / "wheels"
    wheels.mkdir(parents=True)
    system = wheelhouse(package, arch, wheels, work)
    shutil.copy(own_wheel, wheels)
    for whl in wheels.glob("*.whl"):
        whl.chmod(0o644)
    pins = sorted(wheel_pin(w) for w in wheels.glob("*.whl") if wheel_pin(w)[0] != "pip")
    install_file("".join(f"{n}=={v}\n" for n, v in pins), wheels / "requirements.txt")

    for unit in package.units:
        install_file(unit_for_package(ROOT / "systemd" / unit, package),
                     root / "lib/systemd/system" / unit)
    install_file(sysusers_for_package(package),
                 root / "usr/lib/sysusers.d" / f"{package.name}.conf")
    for name, source in package.configs.items():
        install_file(ROOT / source, root / "etc/hcp" / name, 0o640)
    for command in package.commands:
        link = root / "usr/bin" / command
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(f"/opt/hcp/{package.component}/venv/bin/{command}")
    doc = root / "usr/share/doc" / package.name
    for path in package.docs:
        install_file(ROOT / path, doc / Path(path).name)
    for name, source in package.examples.items():
        install_file(ROOT / source, doc / "examples" / name)
    install_file(fill(HERE / "copyright.in", {}), doc / "copyright")

    relations: dict[str, list[str]] = {"Depends": [*PYTHON_DEPENDS, *package.depends],
                                       "Recommends": list(package.recommends),
                                       "Suggests": list(package.suggests)}
    for name in system:
        relation, debian_package = arch.from_system[name]
        relations[relation].append(debian_package)
    values = {
        "PACKAGE": package.name,
        "COMPONENT": package.component,
        "USER": package.user,
        "UNITS": " ".join(package.units),
        "CONFIGS": " ".join(f"/etc/hcp/{n}" for n in package.configs),
        "DATA_DIRS": " ".join(package.data_dirs),
        "SYSTEM_SITE": "--system-site-packages" if system else "",
    }
    debian = root / "DEBIAN"
    for script in ("postinst", "prerm", "postrm"):
        install_file(fill(HERE / f"{script}.in", values), debian / script, 0o755)
    install_file("".join(f"/etc/hcp/{n}\n" for n in package.configs), debian / "conffiles")
    write_md5sums(root)
    size_kib = sum(p.stat().st_size for p in root.rglob("*")
                   if p.is_file() and not p.is_symlink()) // 1024 + 1
    control = {
        "Package": package.name,
        "Version": version,
        "Architecture": arch.debian,
        "Maintainer": MAINTAINER,
        "Installed-Size": str(size_kib),
        **{k: ", ".join(v) for k, v in relations.items() if v},
        "Section": package.section,
        "Priority": "optional",
        "Description": package.summary + "\n" + "\n".join(
            f" {line}" if line else " ." for line in package.description.splitlines()),
    }
    install_file("".join(f"{k}: {v}\n" for k, v in control.items()), debian / "control")
    return root


def write_md5sums(root: Path) -> None:
    """DEBIAN/md5sums (dpkg --verify, debsums): every shipped file but the conffiles,
    whose sums dpkg keeps itself."""
    lines = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink() or not path.is_file() or rel.startswith(("DEBIAN/", "etc/")):
            continue
        lines.append(f"{hashlib.md5(path.read_bytes()).hexdigest()}  {rel}\n")
    install_file("".join(lines), root / "DEBIAN/md5sums")


def fetch_font_deb(out: Path) -> None:
    """The device's CJK font as a .deb beside ours: Raspberry Pi OS Lite lacks it, and a
    hall without internet cannot fetch it (`apt install ./hcp-device_….deb ./fonts-…deb`)."""
    if list(out.glob("fonts-wqy-zenhei_*_all.deb")):
        return
    try:
        run("apt-get", "download", "fonts-wqy-zenhei", cwd=out)
    except BuildError as e:
        say(f"warning: could not fetch fonts-wqy-zenhei's .deb ({e}); on a Pi without "
            "internet install it beside hcp-device yourself")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="./hcp package", description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", required=True, choices=sorted(ARCHES))
    p.add_argument("--out", type=Path, default=ROOT / "dist", help="default: dist/")
    p.add_argument("--version", default="",
                   help="the packages' Debian version (default: pyproject.toml's)")
    p.add_argument("--only", choices=[pkg.name for pkg in PACKAGES],
                   help="build one package instead of both")
    p.add_argument("--no-font", action="store_true",
                   help="do not put fonts-wqy-zenhei's .deb beside the device package")
    args = p.parse_args(argv)
    arch = ARCHES[args.arch]
    meta_version = project().get("version")
    version = args.version or str(meta_version)
    if not re.fullmatch(r"[0-9][A-Za-z0-9.+~-]*", version):
        print(f"./hcp package: --version {version!r} is not a Debian version", file=sys.stderr)
        return 2
    if shutil.which("dpkg-deb") is None:
        print("./hcp package: needs dpkg-deb (Debian's dpkg package)", file=sys.stderr)
        return 69
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix="hcp-package-") as tmp:
            work = Path(tmp)
            own = build_own_wheel(work / "own", work)
            for package in PACKAGES:
                if args.only and package.name != args.only:
                    continue
                say(f"{package.name} {version} for {arch.debian}: collecting wheels")
                root = stage(package, arch, version, work, own)
                deb = args.out / f"{package.name}_{version}_{arch.debian}.deb"
                run("dpkg-deb", "--root-owner-group", "-Zxz", "--build", root, deb)
                say(f"wrote {deb.relative_to(ROOT) if deb.is_relative_to(ROOT) else deb}")
                if package.name == "hcp-device" and not args.no_font:
                    fetch_font_deb(args.out)
    except BuildError as e:
        print(f"./hcp package: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main())
