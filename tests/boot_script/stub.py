"""Stand-in for a command the boot scripts run: logs its argv and acts out a plan.

Called as `stub.py NAME ARGS...` by a per-test wrapper named NAME on PATH.

Environment:
  CEPHBOOT_TEST_LOG     JSON lines file; each call appends {"cmd": NAME, "argv": ARGS}.
  CEPHBOOT_TEST_PLAN    JSON file {NAME: [step, ...]}; call N of NAME acts out step N,
                        and the last step repeats.  A step may have "rc", "stdout",
                        "stderr", "advance" (seconds added to the fake clock),
                        "rename" ({old: new}, e.g. udev renaming a NIC) and "write"
                        ({path: text}, e.g. a carrier file that comes up; missing
                        folders are made).
  CEPHBOOT_TEST_UPTIME  the fake /proc/uptime; `sleep S` advances it by S seconds
                        unless its step says otherwise.
"""

import json
import os
import sys


def main() -> int:
    name, args = sys.argv[1], sys.argv[2:]
    log_path = os.environ["CEPHBOOT_TEST_LOG"]
    with open(log_path, encoding="utf-8") as log:
        earlier = sum(1 for line in log if json.loads(line)["cmd"] == name)
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(json.dumps({"cmd": name, "argv": args}) + "\n")

    plan_path = os.environ.get("CEPHBOOT_TEST_PLAN", "")
    steps = []
    if plan_path:
        with open(plan_path, encoding="utf-8") as plan:
            steps = json.load(plan).get(name, [])
    step = steps[min(earlier, len(steps) - 1)] if steps else {}

    advance = step.get("advance")
    if advance is None and name == "sleep":
        advance = float(args[0])
    uptime_path = os.environ.get("CEPHBOOT_TEST_UPTIME", "")
    if advance and uptime_path:
        with open(uptime_path, encoding="utf-8") as uptime:
            now = float(uptime.read().split()[0])
        with open(uptime_path, "w", encoding="utf-8") as uptime:
            uptime.write(f"{now + advance:.2f} 0.00\n")

    for old, new in step.get("rename", {}).items():
        os.rename(old, new)
    for path, text in step.get("write", {}).items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as target:
            target.write(text)
    sys.stdout.write(step.get("stdout", ""))
    sys.stderr.write(step.get("stderr", ""))
    return int(step.get("rc", 0))


if __name__ == "__main__":
    sys.exit(main())
