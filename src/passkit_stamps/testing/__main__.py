"""``python -m passkit_stamps.testing``: the fake APNs as a process (same as ``.fake_apns``)."""

from .fake_apns import main

raise SystemExit(main())
