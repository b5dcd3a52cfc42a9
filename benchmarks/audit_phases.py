"""The audit stage's phases timed in one process, on a prepared work folder (benchmarks/audit.py runs it there):
the imports, loading the features, the near-duplicate search, the cross-validated label check, and writing the
tables and pictures. Prints one JSON line of seconds."""

import json
import time

import yaml

start = time.perf_counter()
seconds = {}


def lap(name: str) -> None:
    global start
    now = time.perf_counter()
    seconds[name] = round(now - start, 2)
    start = now


import cleanlab.filter  # noqa: E402, F401
import matplotlib.figure  # noqa: E402, F401
import sklearn.linear_model  # noqa: E402, F401
import sklearn.neighbors  # noqa: E402, F401

from transfer.audit.dataset import load_images  # noqa: E402
from transfer.audit.duplicates import near_duplicates  # noqa: E402
from transfer.audit.label_issues import find_label_issues  # noqa: E402
from transfer.audit.outputs import write_audit  # noqa: E402

lap("imports")
with open("params.yaml", encoding="utf-8") as file:
    config = yaml.safe_load(file)["audit"]
images = load_images("features", "split")
lap("load")
duplicates = near_duplicates(images.features, config["duplicate_ratio"])
lap("near_duplicates")
issues = find_label_issues(
    images.features, images.labels, len(images.classes), config["logistic_c"], config["folds"], config["seed"]
)
lap("label_issues")
write_audit("audit_phases", images, duplicates, issues, config["max_rows"], "images")
lap("write")
print(json.dumps(seconds))
