"""Exact-step 1-D k-means for weight tensors.

Weights are scalars, so after one sort every cluster is a contiguous run of the sorted values and a Lloyd
iteration needs only k boundary searches and prefix sums: O(k log n) per iteration after the O(n log n) sort.

On top of plain Lloyd, every iteration
- relocates empty clusters by splitting the non-empty clusters whose split at their mean lowers the SSE most, and
- applies split-merge moves: merge two neighbouring clusters and split another one when that lowers the SSE.
Both are evaluated exactly from the prefix sums (the SSE of a run is sum(w x^2) - S1^2 / S0), so every step
lowers the SSE and the result is a Lloyd fixed point (each centroid the mean of its members, each point at its
nearest centroid) whenever the loop converges within max_iter.

Cost: one NumPy sort (values only), float64 prefix sums, then iterations on arrays of k values: each a few dozen
NumPy calls and one or two searches of k values in the sorted data, so tens of microseconds, not milliseconds of
torch dispatch. Labels in input order come from a table over the value range plus one compare pass per boundary
in a table cell (`_labels`), several times faster than a binary search per value (torch.bucketize), in cache-sized
chunks and written over the sorted copy (no fresh data-sized memory: its page faults cost as much as a pass).

Large unweighted inputs (>= _COARSE_MIN values, improve=True) are searched from starts of their own instead of
`init` (_solve_large), because the loop's cost is its number of iterations (~50-100 us each, whatever n):
- k <= 16: the optimum of a ~150-run summary of the sorted values (equal-count, equal-width and log-spaced tail
  runs; a dynamic programme on a (m, m) table), then joint searches of all k-1 boundaries over candidate grids that
  shrink 8x a search (a Viterbi pass over the boundaries, exact from the prefix sums) until no boundary moves on
  the one-point grid, then a Lloyd fixed-point check: the optimum on MiniLM's tensors, in ~5 searches;
- k > 16: on block means (one weighted point per 32 sorted values, outlier blocks split into their values): a
  Panter-Dite start (centroid density ~ p^(1/3)), re-spaced twice to equal distortion per cluster (_respace), at
  most 12 steps of the loop above, one joint boundary search; then at most 3 plain Lloyd steps on all values.

`kmeans_1d_dp` is the exact optimum (dynamic programming over the sorted values, O(k n^2)) for small inputs.

Files: base (result type, initial centroids, assign), runs (sorted values and prefix sums), labels (labels in
input order), lloyd (the Lloyd loop with moves), search (the global search), tensor (kmeans_1d), rows
(kmeans_1d_rows), rowsearch (kmeans_1d_rows' near-optimal search="global"), reference (the exact dynamic
programme and scikit-learn).
"""

from qbench.quant.kmeans1d.base import INITS, SEARCHES, KMeansResult, assign, init_centroids
from qbench.quant.kmeans1d.reference import kmeans_1d_dp, kmeans_sklearn
from qbench.quant.kmeans1d.rows import init_centroids_rows, kmeans_1d_rows
from qbench.quant.kmeans1d.tensor import kmeans_1d

__all__ = [
    "INITS",
    "SEARCHES",
    "KMeansResult",
    "assign",
    "init_centroids",
    "init_centroids_rows",
    "kmeans_1d",
    "kmeans_1d_dp",
    "kmeans_1d_rows",
    "kmeans_sklearn",
]
