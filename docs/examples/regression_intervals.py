"""The regression figure of docs/quickstart.md: PFNRegressor's predictive intervals on a 1-D problem.

Run from the repository root:  python docs/examples/regression_intervals.py
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from pfn import PFNRegressor

rng = np.random.default_rng(0)
x = rng.uniform(-3, 3, 60)
y = np.sin(x) + 0.15 * x**2 + rng.normal(0, 0.1 + 0.1 * np.abs(x), 60)  # noise grows with |x|
grid = np.linspace(-4, 4, 300)

reg = PFNRegressor(random_state=0).fit(x[:, None], y)
q = reg.predict_quantiles(grid[:, None], [0.05, 0.25, 0.5, 0.75, 0.95])

fig, ax = plt.subplots(figsize=(6, 3.6))
ax.fill_between(grid, q[:, 0], q[:, 4], alpha=0.2, color="C0", label="90% interval")
ax.fill_between(grid, q[:, 1], q[:, 3], alpha=0.35, color="C0", label="50% interval")
ax.plot(grid, q[:, 2], color="C0", label="median")
ax.scatter(x, y, s=12, color="k", label="train rows")
ax.set_xlabel("x")
ax.set_ylabel("y")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig("docs/figures/regression_intervals.png", dpi=120)
print("wrote docs/figures/regression_intervals.png")
