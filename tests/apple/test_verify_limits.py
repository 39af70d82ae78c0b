"""verify_pkpass bounds what it reports (issue 12, item 10)."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

import pytest

from passkit_stamps.apple.verify import ArchiveLimits, verify_pkpass
from passkit_stamps.errors import InvalidPassError


def test_a_manifest_of_many_missing_files_gives_a_bounded_list_of_reasons() -> None:
    pass_json = b'{"formatVersion": 1}'
    manifest = {f"missing-{i:07d}.png": "0" * 40 for i in range(50_000)}
    manifest["pass.json"] = hashlib.sha1(pass_json).hexdigest()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("pass.json", pass_json)
        archive.writestr("manifest.json", json.dumps(manifest))
    with pytest.raises(InvalidPassError) as caught:
        verify_pkpass(buffer.getvalue())
    reasons = caught.value.reasons
    cap = ArchiveLimits().max_reasons
    assert len(reasons) == cap + 1
    assert reasons[-1].startswith("and ") and reasons[-1].endswith("more reason(s)")
    assert "manifest.json lists missing-0000000.png" in reasons[0]
