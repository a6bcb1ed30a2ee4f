"""Parts of computed tiles kept for the later chunks whose regions they reach (see :mod:`vismtl.wsi.plan`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from vismtl.wsi.plan import Corner, intersect, within
from vismtl.wsi.stitch import ChunkCanvas
from vismtl.wsi.tiling import Box


class TileCache:
    """Tiles' outputs kept where the model ran them, until the last chunk that needs them takes them.

    The plan says which parts of which tile to keep and which chunk takes them last; this
    only stores and copies. Each part holds every dense task's channels, in the canvas's order,
    and the tile's image-level outputs (its tissue-class vote, counted by the chunk owning it).
    """

    def __init__(self, tile: int) -> None:
        self.tile = tile
        self._parts: dict[Corner, list[tuple[Box, torch.Tensor]]] = {}
        self._patch: dict[Corner, dict[str, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self._parts)

    def keep(
        self, corner: Corner, parts: Sequence[Box], dense: torch.Tensor, patch: Mapping[str, torch.Tensor]
    ) -> None:
        """Keep ``parts`` of a tile whose dense outputs are ``dense`` (``[C, tile, tile]``, every
        task's channels in the canvas's order)."""
        box = (corner[0], corner[1], corner[0] + self.tile, corner[1] + self.tile)
        # copies: a part holds no reference to the batch it came from
        self._parts[corner] = [(part, dense[(slice(None), *within(part, box))].clone()) for part in parts]
        self._patch[corner] = {name: value.clone() for name, value in patch.items()}

    def take(self, canvas: ChunkCanvas, corner: Corner, last: bool) -> dict[str, torch.Tensor]:
        """Copy a kept tile into ``canvas`` where it meets its region; its image-level outputs."""
        if not canvas.copy:
            raise ValueError("kept tiles go only into canvases of disjoint tiles")
        for box, values in self._parts[corner]:
            common = intersect(box, canvas.region)
            if common is not None:
                canvas.sums[(slice(None), *within(common, canvas.region))] = values[(slice(None), *within(common, box))]
        patch = self._patch[corner]
        if last:
            del self._parts[corner], self._patch[corner]
        return patch
