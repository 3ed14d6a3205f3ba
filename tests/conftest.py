from __future__ import annotations

import logging
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
# pytest-xdist's workers get COLUMNS=80 and LINES=24 from execnet; the CLI's tables would then wrap
# words the tests look for. Tests of the 80-column layout set COLUMNS themselves (monkeypatch).
os.environ["COLUMNS"] = "160"
os.environ.pop("LINES", None)
logging.getLogger("transformers").setLevel(logging.ERROR)
