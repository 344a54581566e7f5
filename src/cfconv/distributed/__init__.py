"""Scale out: data-parallel training and kernel states split over devices and hosts."""

from ._mesh import (
    DATA_AXIS as DATA_AXIS,
    MODEL_AXIS as MODEL_AXIS,
    initialize as initialize,
    make_mesh as make_mesh,
    mesh_info as mesh_info,
    parse_mesh as parse_mesh,
)
from ._scaling import (
    project_memory as project_memory,
    scaling_row as scaling_row,
    scaling_rows as scaling_rows,
    scaling_table as scaling_table,
)
from ._sharding import (
    apply_model as apply_model,
    gather as gather,
    replicate as replicate,
    shard as shard,
    shard_batch as shard_batch,
    tree_shardings as tree_shardings,
)
from ._strategy import ShardedSparse as ShardedSparse, shard_strategy as shard_strategy


__all__ = [
    "DATA_AXIS",
    "MODEL_AXIS",
    "ShardedSparse",
    "apply_model",
    "gather",
    "initialize",
    "make_mesh",
    "mesh_info",
    "parse_mesh",
    "project_memory",
    "replicate",
    "scaling_row",
    "scaling_rows",
    "scaling_table",
    "shard",
    "shard_batch",
    "shard_strategy",
    "tree_shardings",
]
