# Shared by .ci/run and .ci/release-watch (sourced, from the repository root).

# The libraries whose releases break us most often: CI installs their newest releases and the lowest that
# pyproject.toml declares, and every run prints the versions it tested.
WATCHED="transformers timm huggingface_hub datasets"

# The fenced block that follows the marker <!-- NAME --> in README.md, so CI runs exactly what the README says.
readme_block() {
    awk -v marker="<!-- $1 -->" '
        $0 == marker { found = 1; next }
        found && /^```/ { if (inside) exit; inside = 1; next }
        inside { print }
    ' README.md
}

# A fresh virtual environment at $1, activated, with the README's install command run in it.
fresh_install() {
    install=$(readme_block install)
    tests=$(readme_block test)
    [ -n "$install" ] && [ -n "$tests" ] || { echo "README.md lacks its install or test block" >&2; exit 1; }
    rm -rf "$1"
    python3 -m venv "$1"
    # shellcheck disable=SC1090,SC1091
    source "$1/bin/activate"
    echo "+ $install"
    eval "$install"
}

# "name==version" of each watched library as installed.
installed_versions() {
    python - $WATCHED <<'PY'
import sys
from importlib.metadata import version
print(" ".join(f"{name}=={version(name)}" for name in sys.argv[1:]))
PY
}

# "name==lower-bound" of each watched library, from its ">=" in pyproject.toml's dependencies.
lowest_versions() {
    python - $WATCHED <<'PY'
import re, sys, tomllib
dependencies = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
lowest = []
for name in sys.argv[1:]:
    (spec,) = [d for d in dependencies if re.match(rf"{name}\b", d)]
    lowest.append(name + "==" + re.search(r">=\s*([\w.]+)", spec).group(1))
print(" ".join(lowest))
PY
}

run_tests() {
    echo "+ $(installed_versions): $tests"
    eval "$tests"
}
