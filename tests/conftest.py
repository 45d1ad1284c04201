"""Shared test fixtures: where the reference material is, and how real parts are required in CI."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from simulators.samples import make_permit

ROOT = Path(__file__).resolve().parent.parent
REF = Path(os.environ.get("EPIX_REF_DIR", ROOT.parent / "shared" / "ref"))
EPIX_FIXTURES = REF / "schemas" / "unepwcmc-epix" / "spec" / "fixtures"
IN_CI = os.environ.get("CI", "").lower() == "true"


def ref_file(*parts: str) -> Path:
    """A file from ../shared/ref, or skip with the reason (fail in CI, where it must be present)."""
    path = REF.joinpath(*parts)
    if not path.exists():
        reason = f"reference material {path} is absent (shared/ref is not beside this checkout)"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    return path


async def eventually(probe, wanted, *, timeout: float = 15.0, every: float = 0.05) -> None:
    """Await ``probe()`` until it gives ``wanted``; fail after ``timeout`` s (a guard against a
    hang, not a timing claim)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (value := await probe()) != wanted:
        assert loop.time() < deadline, f"{value} != {wanted}"
        await asyncio.sleep(every)


def require_command(name: str) -> str:
    """Path of an external command; fails rather than skips when CI=true."""
    found = shutil.which(name)
    if found is None:
        reason = f"the command {name!r} is not installed (Debian package: {name})"
        if IN_CI:
            pytest.fail(reason + " and CI=true requires it")
        pytest.skip(reason)
    return found


@pytest.fixture
def rng() -> random.Random:
    return random.Random(20261123)


@pytest.fixture
def sample_permit(rng):
    return make_permit(rng, issuer="CH", importer_country="FR")


@pytest.fixture
def epix_v2_path() -> Path:
    return ref_file("schemas", "unepwcmc-epix", "spec", "fixtures", "v2", "get_non_final_cites_certificate.xml")


@pytest.fixture
def epix_v1_path() -> Path:
    return ref_file("schemas", "unepwcmc-epix", "spec", "fixtures", "v1", "get_non_final_cites_certificate.xml")


# In CI, property tests draw the same examples every run: a red CI then always means a real,
# reproducible defect, never an unlucky draw. Locally they stay random to keep finding new cases.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if IN_CI else "dev")
