"""The command line as a whole: --version, and every option's default in --help."""

from __future__ import annotations

from audit import __version__


def test_version_prints_the_package_version(cli):
    r = cli("--version")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == f"msae-audit {__version__}"
