"""The group lasso penalty as an onnxloss regularizer."""

from __future__ import annotations

from onnxloss import GraphBuilder, PenaltyError, Regularizer
from onnxloss.terms import check_number

#: Flatten's ``axis`` for each grouping: the groups end up along the rows of a matrix
#: (``rows``: ``[d0, rest]``) or along its columns (``columns``: ``[rest, d_last]``).
_LAYOUT = {"rows": (1, 1), "columns": (-1, 0)}


class GroupLassoPenalty(Regularizer):
    """Group lasso: ``alpha · Σ_t Σ_g sqrt(Σ_{w ∈ g} w² + eps)``.

    For every tensor ``t`` the term matches, the groups ``g`` are its slices along the first
    axis (``groups="rows"``: ``t[i, ...]``) or along the last axis (``groups="columns"``:
    ``t[..., j]``). On a MatMul weight ``[in, out]``, rows are the input features, so the
    penalty drives whole features out of the model; on a Gemm weight with ``transB=1``
    (``[out, in]``), columns are. A vector's groups are its elements either way.

    ``eps > 0`` keeps the gradient finite: ``d sqrt(s)/ds`` is infinite at ``s = 0``, where a
    pruned group sits. The price is a floor: a zero group still costs ``sqrt(eps)``, and its
    gradient vanishes smoothly instead of pinning it at exactly 0, so plain gradient descent
    makes groups small, not exactly zero (threshold them after training to prune).

    The penalty is not divided by the batch size (like the built-in penalties).

    Args:
        tensors: name(s) or glob(s) of the tensors to penalise (rank >= 1).
        alpha: strength, ``> 0`` (default 1.0).
        groups: ``"rows"`` (default) or ``"columns"``.
        eps: added to each group's sum of squares, ``> 0`` (default 1e-8).
    """

    name = "group_lasso"

    def __init__(self, tensors, alpha=1.0, *, groups="rows", eps=1e-8):
        super().__init__(tensors)
        where = f"group_lasso penalty on {', '.join(map(repr, self.tensors))}"
        self.alpha = check_number(f"{where}: alpha", alpha, low=0.0, low_open=True)
        if groups not in _LAYOUT:
            raise PenaltyError(f"{where}: groups must be 'rows' or 'columns', got {groups!r}")
        self.groups = groups
        self.eps = check_number(f"{where}: eps", eps, low=0.0, low_open=True)

    def hyperparameters(self):
        return {"alpha": self.alpha, "groups": self.groups, "eps": self.eps}

    def penalty(self, g: GraphBuilder, tensors):
        return g.Mul(g.add_all([self._one(g, t) for t in tensors]), self.alpha)

    def _one(self, g: GraphBuilder, t):
        if t.shape is not None and len(t.shape) == 0:
            raise PenaltyError(
                f"group_lasso penalty: tensor '{t.name}' is a scalar; groups are rows or "
                "columns, so penalise tensors of rank 1 or more (or use an l1 penalty)"
            )
        flatten_axis, reduce_axis = _LAYOUT[self.groups]
        # Flatten works for any rank >= 1 without knowing it, which matters when the core
        # has cast the weight (the cast value carries no static shape).
        matrix = g.Flatten(g.square(t), axis=flatten_axis)
        group_sums = g.reduce_sum(matrix, [reduce_axis])
        return g.reduce_sum(g.Sqrt(g.Add(group_sums, self.eps)))
