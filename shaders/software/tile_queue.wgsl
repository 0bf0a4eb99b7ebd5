// A queue of tiles for the subgroup kernels that lavapipe runs (`Dispatch::TileQueue`): a
// node launches a few workgroups of one subgroup each, and each subgroup takes the node's
// tiles one at a time until none is left. lavapipe hands each of its threads a fixed,
// contiguous share of a dispatch's workgroups, so on a plain grid a thread that the host
// slows, or whose share costs more, holds up the whole dispatch while the other one idles;
// from a queue, each tile goes to whichever thread is free. Included by the kernel files that
// use it; no entry point.
//
// Binding (group 0, a fixed number past every kernel's own bindings):
//   15 queue  storage, read_write  atomic<u32>: the number of tiles taken; the executor zeroes
//                                  it before each run, and no other node shares it

@group(0) @binding(15) var<storage, read_write> queue: atomic<u32>;

/// The subgroup's next tile (the same in every lane); the kernel stops at its tile count.
fn next_tile(lane: u32) -> u32 {
    var tile = 0u;
    if lane == 0u {
        tile = atomicAdd(&queue, 1u);
    }
    return subgroupBroadcast(tile, 0u);
}
