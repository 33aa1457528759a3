"""What `import pfn` costs: the estimators load neither torch, the priors nor gpytorch until
they fit, and pfn.load works without the priors."""

import subprocess
import sys

import pytest

import pfn


def loaded_after(code: str) -> list[str]:
    """The heavy modules a fresh interpreter holds after running ``code``."""
    heavy = ("torch", "gpytorch", "priors", "pfn.train", "sklearn.ensemble", "sklearn.impute")
    code += f"\nimport sys\nprint(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return eval(out.strip().splitlines()[-1])


def test_importing_the_estimators_loads_neither_torch_nor_the_priors_nor_slow_sklearn_parts():
    assert loaded_after("import pfn\nfrom pfn import PFNClassifier, PFNRegressor") == []


def test_fitting_loads_torch_but_not_the_priors():
    code = (
        "import numpy as np\nfrom pfn import PFNRegressor\n"
        "PFNRegressor(n_estimators=1).fit(np.random.rand(20, 2), np.random.rand(20))"
    )
    assert loaded_after(code) == ["sklearn.impute", "torch"]


def test_every_public_name_resolves_and_unknown_ones_raise():
    assert set(pfn.__all__) == set(pfn._EXPORTS) and set(pfn.__all__) <= set(dir(pfn))
    for name in pfn.__all__:
        assert getattr(pfn, name).__module__.startswith("pfn.")
    with pytest.raises(AttributeError, match="module 'pfn' has no attribute 'PFNClasifier'"):
        pfn.PFNClasifier  # noqa: B018
