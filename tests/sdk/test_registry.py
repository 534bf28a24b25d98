"""Driver discovery through real entry points (a dist-info written to a temp sys.path entry)."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mapper_sdk._registry import Registry
from mapper_sdk.virtual import VirtualDriver


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory on sys.path holding installed-looking distributions with entry points."""
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def _install(root: Path, dist: str, entry_points: dict[str, str], module: str, code: str) -> None:
    info = root / f"{dist}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[mapper_sdk.drivers]\n{lines}\n")
    (root / f"{module}.py").write_text(textwrap.dedent(code))


def test_builtin_virtual_driver_is_found_through_its_entry_point() -> None:
    registry = Registry.from_entry_points()
    assert "virtual" in registry.names()
    assert registry.get("virtual") is VirtualDriver


def test_third_party_driver_is_found_the_same_way(plugins: Path) -> None:
    _install(
        plugins,
        "acme_mapper",
        {"acme": "acme_driver:AcmeDriver"},
        "acme_driver",
        """
        from mapper_sdk.virtual import VirtualDriver
        class AcmeDriver(VirtualDriver):
            protocol = "acme"
        """,
    )
    registry = Registry.from_entry_points()
    assert "acme" in registry.names()
    driver = registry.get("acme")
    assert driver is not None
    assert driver.__name__ == "AcmeDriver"


def test_broken_plugins_are_reported_not_fatal(
    plugins: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _install(
        plugins,
        "broken_mapper",
        {
            "crashy": "crashy_driver:Driver",
            "notadriver": "crashy_driver:NOT_A_DRIVER",
            "liar": "crashy_driver:Liar",
        },
        "crashy_driver",
        """
        from mapper_sdk.virtual import VirtualDriver
        NOT_A_DRIVER = 42
        class Liar(VirtualDriver):
            protocol = "something-else"
        """,
    )
    registry = Registry.from_entry_points()
    assert registry.get("crashy") is None  # no attribute Driver in the module
    assert registry.get("notadriver") is None
    assert registry.get("liar") is None
    assert set(registry.broken) == {"crashy", "notadriver", "liar"}
    assert "not a mapper_sdk.Driver subclass" in registry.broken["notadriver"]
    assert "declares protocol 'something-else'" in registry.broken["liar"]
    assert "crashy" in registry.why_unavailable("crashy")
    assert registry.get("virtual") is VirtualDriver  # the others still work
    assert sum("broken" in r.message for r in caplog.records) == 3


def test_allow_and_deny_lists() -> None:
    assert "virtual" not in Registry.from_entry_points(deny=["virtual"]).names()
    assert Registry.from_entry_points(allow=["virtual"]).names() == ["virtual"]


def test_unknown_protocol_message_names_the_installed_ones() -> None:
    message = Registry.from_entry_points().why_unavailable("zigbee")
    assert "'zigbee'" in message
    assert "virtual" in message
    assert "mapper_sdk.drivers" in message


def test_listing_drivers_imports_no_protocol_library() -> None:
    """Protocol libraries load only when a device of that protocol is bound."""
    code = (
        "import sys\n"
        "from mapper_sdk._registry import Registry\n"
        "r = Registry.from_entry_points()\n"
        "assert r.names(), r.names()\n"
        "r.get('virtual')\n"
        "libs = ('pymodbus', 'asyncua', 'bleak', 'paho', 'grpc')\n"
        "heavy = [m for m in libs if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
