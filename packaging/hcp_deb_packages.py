"""What the offline installers are (docs/packaging.md): the Debian architectures and the
wheels that run on each, and the two .debs — which extra of pyproject.toml each installs,
its units, commands, configs, docs and Debian relations. packaging/build.py builds them.

A plain module beside the script, not a package: see build.py's docstring.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PYTHON_VERSION = "3.11"
# Debian bookworm has glibc 2.36: every manylinux wheel up to 2_36 runs there.
GLIBC_MINOR = 36
MAINTAINER = "hcp-evaluator developers <hcp-evaluator@localhost>"
# The wheels with C code are built for CPython 3.11's ABI (cp311): another python3
# (trixie's 3.13) would leave the venv unable to import them.
PYTHON_DEPENDS = ["python3 (>= 3.11)", "python3 (<< 3.12)"]


@dataclass(frozen=True)
class Arch:
    """A Debian architecture and the wheels that run on it."""

    debian: str
    machine: str                       # the wheel tags' machine name
    # PyPI has no wheel of these for this machine: they come from a Debian (or
    # Raspberry Pi OS) package instead, through a venv that sees the system's
    # site-packages. Name (as pip spells it) -> (relation, Debian package).
    from_system: dict[str, tuple[str, str]] = field(default_factory=dict)
    # Resolve the versions on this machine's wheels when this one lacks some.
    resolve_as: str = ""

    def platforms(self) -> list[str]:
        tags = [f"manylinux2014_{self.machine}"]
        tags += [f"manylinux_2_{minor}_{self.machine}" for minor in range(17, GLIBC_MINOR + 1)]
        return tags


ARCHES = {
    "amd64": Arch("amd64", "x86_64"),
    "arm64": Arch("arm64", "aarch64"),
    # 32-bit Raspberry Pi OS: PyPI has no armv7l wheels of Pillow, lgpio and
    # psycopg-binary. Pillow is Debian's python3-pil (9.4, enough for luma), lgpio is
    # Raspberry Pi OS's python3-lgpio, psycopg runs in its pure-Python form on libpq5.
    "armhf": Arch("armhf", "armv7l", from_system={
        "pillow": ("Depends", "python3-pil"),
        "lgpio": ("Recommends", "python3-lgpio"),
        "psycopg-binary": ("Depends", "libpq5"),
    }, resolve_as="arm64"),
}


@dataclass(frozen=True)
class Package:
    """One .deb: which extra of pyproject.toml it installs and what it puts where."""

    name: str
    component: str                     # /opt/hcp/<component>
    extra: str
    summary: str
    description: str
    user: str                          # the service user its units run as
    units: list[str]
    commands: list[str]
    configs: dict[str, str]            # /etc/hcp/<name> <- repository file
    data_dirs: list[str]               # kept on purge unless HCP_PURGE_DATA=yes
    docs: list[str]
    examples: dict[str, str] = field(default_factory=dict)
    more_requirements: list[str] = field(default_factory=list)
    depends: list[str] = field(default_factory=list)
    recommends: list[str] = field(default_factory=list)
    suggests: list[str] = field(default_factory=list)
    section: str = "misc"


PACKAGES = [
    Package(
        name="hcp-device", component="device", extra="device",
        summary="好差评 window evaluator (device daemon)",
        description=(
            "The daemon of a government-service rating (好差评) evaluator on a\n"
            "Raspberry Pi: an OLED screen and five keys (or a touch panel), a serial\n"
            "link to the window's business system, a crash-safe outbox and MQTT\n"
            "delivery to the hall's broker. Every Python library it needs is inside\n"
            "the package: installing it needs no network."),
        user="hcp-device", units=["hcp-device.service"], commands=["hcp-device"],
        configs={"device.toml": "systemd/examples/device.toml"},
        data_dirs=["/var/lib/hcp-device"],
        docs=["docs/install.md", "docs/packaging.md", "docs/troubleshooting.md",
              "docs/hardware-input.md", "docs/serial.md", "docs/spec.md"],
        # gpiozero's pin driver on Bookworm (the only one on a Pi 5); not a
        # dependency of gpiozero itself. >= 0.2: below that PyPI has only an empty
        # placeholder wheel, which pip would otherwise pick for a machine without one.
        more_requirements=["lgpio>=0.2"],
        # The screens need a CJK font; ./hcp package puts its .deb beside ours.
        depends=["systemd", "fonts-wqy-zenhei"],
        # aplay plays the voice clips ([voice] kind = "alsa"); voice is optional.
        recommends=["alsa-utils"],
        suggests=["i2c-tools", "mosquitto-clients"],
    ),
    Package(
        name="hcp-server", component="server", extra="server", section="net",
        summary="好差评 hall server: bridge, early warning, expired prompts, platform",
        description=(
            "The hall's side of the government-service rating (好差评) evaluators:\n"
            "hcp-bridge (MQTT to the aggregation platform, receipts back), its\n"
            "early-warning watcher and expired-prompt forwarder, and hcp-platform,\n"
            "the reference city platform. Every Python library is inside the\n"
            "package: installing it needs no network."),
        user="hcp-bridge",
        units=["hcp-bridge.service", "hcp-bridge-watch.service",
               "hcp-bridge-expired.service"],
        commands=["hcp-bridge", "hcp-platform"],
        configs={"bridge.toml": "broker_bridge/bridge.example.toml",
                 "watch.toml": "broker_bridge/watch.example.toml"},
        data_dirs=["/var/lib/hcp-bridge-watch"],
        docs=["docs/install.md", "docs/packaging.md", "docs/bridge.md", "docs/alerts.md",
              "docs/gov-profile.md", "docs/platform.md", "docs/troubleshooting.md"],
        examples={"mosquitto.conf": "systemd/examples/mosquitto.conf",
                  "mosquitto.acl": "systemd/examples/mosquitto.acl",
                  "mosquitto-dynsec.json": "systemd/examples/mosquitto-dynsec.json",
                  "mosquitto-dynsec-device.json":
                      "systemd/examples/mosquitto-dynsec-device.json"},
        depends=["systemd"],
        recommends=["mosquitto"],
        suggests=["mosquitto-clients", "postgresql"],
    ),
]
