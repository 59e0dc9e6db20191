"""CI runs exactly README's test command: keep .ci/run and README.md in step."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Test\s+```bash\n(.+?)\n```", readme, re.DOTALL)
    assert block, "README.md needs a '## Test' section with one bash block"
    command = block.group(1).strip()
    ci_lines = [ln.strip() for ln in (ROOT / ".ci/run").read_text().splitlines() if ln.strip()]
    assert ci_lines[-1] == command
