"""The README's commands are the ones CI and users run."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = next(line for line in ci.splitlines() if "pytest" in line)
    assert command in readme


def test_every_subpackage_ships_in_the_wheel():
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "fusion_bench_tinting").rglob("__init__.py")
        if "config" not in init.parts
    }
    assert found <= listed, sorted(found - listed)


def test_every_relative_link_of_the_readme_and_docs_leads_to_a_file():
    import re

    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, broken


def test_every_installed_command_and_script_answers_help():
    """The suite builders and benchmarks work from a plain install, without the repository's scripts/."""
    import subprocess
    import sys

    import tomllib

    commands = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"fusion-bench-tinting-build-minilm-text", "fusion-bench-tinting-bench-speed"} <= set(commands)
    calls = "".join(
        f"sys.argv = [{name!r}, '--help']\n"
        f"try:\n    from {target.split(':')[0]} import {target.split(':')[1]} as main; main()\n"
        f"except SystemExit as done:\n    assert done.code in (0, None), {name!r}\n"
        for name, target in commands.items()
    )
    scripts = sorted((ROOT / "scripts").glob("*.py"))  # the checkout's wrappers of the same commands
    calls += "".join(
        f"sys.argv = [{str(script)!r}, '--help']\n"
        f"try:\n    runpy.run_path({str(script)!r}, run_name='__main__')\n"
        f"except SystemExit as done:\n    assert done.code in (0, None), {script.name!r}\n"
        for script in scripts
    )
    result = subprocess.run(
        [sys.executable, "-c", "import runpy, sys\n" + calls], capture_output=True, text=True, cwd="/"
    )
    assert result.returncode == 0, result.stderr[-800:]
    assert result.stdout.count("usage:") == len(commands) + len(scripts)


def test_the_quick_look_command_builds_the_smoke_suite_and_tables_both_methods(tmp_path):
    import re
    import subprocess

    readme = (ROOT / "README.md").read_text()
    block = readme.split("## See it work", 1)[1]
    command = re.search(r"```bash\n(.+?)\n```", block, re.S).group(1).strip()
    result = subprocess.run(command, shell=True, capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    table = (tmp_path / "outputs" / "quick-look" / "comparison.md").read_text()
    for label in ("Task Arithmetic", "Model Tinting"):
        row = next(
            line for line in table.splitlines() if line.startswith(f"| {label}") or line.startswith(f"| **{label}")
        )
        assert re.search(r"\d+\.\d", row), row  # a finished run with numbers
    assert "| Model Tinting" in result.stdout  # printed, not only written
