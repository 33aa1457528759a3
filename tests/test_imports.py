"""What `import pfn` costs: the estimators and pfn.load work without the priors or gpytorch."""

import subprocess
import sys


def test_importing_the_estimators_loads_neither_the_priors_nor_gpytorch():
    code = (
        "import sys, pfn\n"
        "from pfn import PFNClassifier, PFNRegressor\n"
        "print(sorted(m for m in ('gpytorch', 'priors', 'pfn.train') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
