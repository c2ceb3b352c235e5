"""Progress bars (tqdm): one over the epochs with the running loss (``verbose=1``), and one
over the batches of the current epoch as well (``verbose=2``).

Bars go to stderr and appear only when it is a terminal, unless the environment variable
``ONNXLOSS_PROGRESS=1`` asks for them anyway (logs, notebooks that do not look like one).
"""

from __future__ import annotations

import os
import sys

ENV_FORCE = "ONNXLOSS_PROGRESS"


class Progress:
    """The bars of one ``fit``; every method is a no-op at ``verbose=0``."""

    def __init__(self, verbose: int, epochs: int, start: int = 0):
        self.verbose = int(verbose)
        self._epochs = self._batches = None
        if self.verbose <= 0:
            return
        from tqdm.auto import tqdm

        self._tqdm = tqdm
        forced = os.environ.get(ENV_FORCE, "").strip().lower() in {"1", "true", "yes", "on"}
        self._disable = False if forced else not _is_terminal(sys.stderr)
        self._epochs = tqdm(
            total=epochs, initial=start, desc="fit", unit="epoch", disable=self._disable
        )

    def start_epoch(self, n_batches: int | None) -> None:
        if self.verbose >= 2:
            self._batches = self._tqdm(
                total=n_batches, desc="batches", unit="batch", leave=False, disable=self._disable
            )

    def batch_done(self, running_loss: float) -> None:
        if self._batches is not None:
            self._batches.update(1)
            self._batches.set_postfix(loss=f"{running_loss:.6g}", refresh=False)

    def epoch_done(self, loss: float) -> None:
        if self._batches is not None:
            self._batches.close()
            self._batches = None
        if self._epochs is not None:
            self._epochs.set_postfix(loss=f"{loss:.6g}", refresh=False)
            self._epochs.update(1)

    def close(self) -> None:
        for bar in (self._batches, self._epochs):
            if bar is not None:
                bar.close()
        self._batches = self._epochs = None


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
