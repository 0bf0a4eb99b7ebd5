// Rows of 64 floats held by one lane, and their exchange within a subgroup of eight lanes, for
// the subgroup attention kernels: shaders.rs builds each attention_*_tex_sg shader as its own
// file followed by this one. No bindings, no entry point.
//
// Why this shape: llvmpipe runs a subgroup as one SIMD register, so subgroupBroadcast from a
// constant lane is a register shuffle while a texel fetch is a gather; a lane fetches one
// key (or query) row and the subgroup shares it by broadcast. The lane must be a constant,
// hence one function per lane. Everything is indexed by constants: a first version whose rows
// were private arrays indexed by loop counters took llvmpipe minutes to compile.

/// A row of 64 floats as 16 texels: texel 4i + c is column c of m<i>.
struct Row {
    m0: mat4x4<f32>,
    m1: mat4x4<f32>,
    m2: mat4x4<f32>,
    m3: mat4x4<f32>,
}

/// The four rows a lane owns (its four queries or keys), r<s> for slot s.
struct Rows4 {
    r0: Row,
    r1: Row,
    r2: Row,
    r3: Row,
}

/// Texels c..c + 4 of row r of an rgba32float texture.
fn texture_mat(tex: texture_storage_2d<rgba32float, read>, c: i32, r: i32) -> mat4x4<f32> {
    return mat4x4<f32>(
        textureLoad(tex, vec2<i32>(c, r)),
        textureLoad(tex, vec2<i32>(c + 1, r)),
        textureLoad(tex, vec2<i32>(c + 2, r)),
        textureLoad(tex, vec2<i32>(c + 3, r)),
    );
}

/// Row r (16 texels) of an rgba32float texture.
fn texture_row(tex: texture_storage_2d<rgba32float, read>, r: i32) -> Row {
    return Row(texture_mat(tex, 0, r), texture_mat(tex, 4, r), texture_mat(tex, 8, r), texture_mat(tex, 12, r));
}

fn mat_dot(sum: f32, x: mat4x4<f32>, y: mat4x4<f32>) -> f32 {
    var s = sum;
    s += dot(x[0], y[0]);
    s += dot(x[1], y[1]);
    s += dot(x[2], y[2]);
    s += dot(x[3], y[3]);
    return s;
}

/// x · y summed texel by texel from 0.0, as attention_delta.wgsl sums: a query that sees only
/// its own key then gets dp == delta exactly, and a zero gradient.
fn row_dot(x: Row, y: Row) -> f32 {
    return mat_dot(mat_dot(mat_dot(mat_dot(0.0, x.m0, y.m0), x.m1, y.m1), x.m2, y.m2), x.m3, y.m3);
}

/// (x.r<s> · y) for the four slots.
fn rows_dot(x: Rows4, y: Row) -> vec4<f32> {
    return vec4<f32>(row_dot(x.r0, y), row_dot(x.r1, y), row_dot(x.r2, y), row_dot(x.r3, y));
}

/// acc + p * x
fn row_axpy(acc: Row, p: f32, x: Row) -> Row {
    return Row(acc.m0 + x.m0 * p, acc.m1 + x.m1 * p, acc.m2 + x.m2 * p, acc.m3 + x.m3 * p);
}

/// acc.r<s> + p[s] * x for the four slots.
fn rows_axpy(acc: Rows4, p: vec4<f32>, x: Row) -> Rows4 {
    return Rows4(
        row_axpy(acc.r0, p.x, x),
        row_axpy(acc.r1, p.y, x),
        row_axpy(acc.r2, p.z, x),
        row_axpy(acc.r3, p.w, x),
    );
}

fn row_scale(x: Row, c: f32) -> Row {
    return Row(x.m0 * c, x.m1 * c, x.m2 * c, x.m3 * c);
}

/// x.r<s> * c[s] for the four slots.
fn rows_scale(x: Rows4, c: vec4<f32>) -> Rows4 {
    return Rows4(row_scale(x.r0, c.x), row_scale(x.r1, c.y), row_scale(x.r2, c.z), row_scale(x.r3, c.w));
}

// Lane <n>'s matrix (row), in every lane.
fn mat_from0(x: mat4x4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(
        subgroupBroadcast(x[0], 0u),
        subgroupBroadcast(x[1], 0u),
        subgroupBroadcast(x[2], 0u),
        subgroupBroadcast(x[3], 0u),
    );
}

fn mat_from1(x: mat4x4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(
        subgroupBroadcast(x[0], 1u),
        subgroupBroadcast(x[1], 1u),
        subgroupBroadcast(x[2], 1u),
        subgroupBroadcast(x[3], 1u),
    );
}

fn mat_from2(x: mat4x4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(
        subgroupBroadcast(x[0], 2u),
        subgroupBroadcast(x[1], 2u),
        subgroupBroadcast(x[2], 2u),
        subgroupBroadcast(x[3], 2u),
    );
}

fn mat_from3(x: mat4x4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(
        subgroupBroadcast(x[0], 3u),
        subgroupBroadcast(x[1], 3u),
        subgroupBroadcast(x[2], 3u),
        subgroupBroadcast(x[3], 3u),
    );
}

fn mat_from4(x: mat4x4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(
        subgroupBroadcast(x[0], 4u),
        subgroupBroadcast(x[1], 4u),
        subgroupBroadcast(x[2], 4u),
        subgroupBroadcast(x[3], 4u),
    );
}

fn mat_from5(x: mat4x4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(
        subgroupBroadcast(x[0], 5u),
        subgroupBroadcast(x[1], 5u),
        subgroupBroadcast(x[2], 5u),
        subgroupBroadcast(x[3], 5u),
    );
}

fn mat_from6(x: mat4x4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(
        subgroupBroadcast(x[0], 6u),
        subgroupBroadcast(x[1], 6u),
        subgroupBroadcast(x[2], 6u),
        subgroupBroadcast(x[3], 6u),
    );
}

fn mat_from7(x: mat4x4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(
        subgroupBroadcast(x[0], 7u),
        subgroupBroadcast(x[1], 7u),
        subgroupBroadcast(x[2], 7u),
        subgroupBroadcast(x[3], 7u),
    );
}

fn row_from0(x: Row) -> Row {
    return Row(mat_from0(x.m0), mat_from0(x.m1), mat_from0(x.m2), mat_from0(x.m3));
}

fn row_from1(x: Row) -> Row {
    return Row(mat_from1(x.m0), mat_from1(x.m1), mat_from1(x.m2), mat_from1(x.m3));
}

fn row_from2(x: Row) -> Row {
    return Row(mat_from2(x.m0), mat_from2(x.m1), mat_from2(x.m2), mat_from2(x.m3));
}

fn row_from3(x: Row) -> Row {
    return Row(mat_from3(x.m0), mat_from3(x.m1), mat_from3(x.m2), mat_from3(x.m3));
}

fn row_from4(x: Row) -> Row {
    return Row(mat_from4(x.m0), mat_from4(x.m1), mat_from4(x.m2), mat_from4(x.m3));
}

fn row_from5(x: Row) -> Row {
    return Row(mat_from5(x.m0), mat_from5(x.m1), mat_from5(x.m2), mat_from5(x.m3));
}

fn row_from6(x: Row) -> Row {
    return Row(mat_from6(x.m0), mat_from6(x.m1), mat_from6(x.m2), mat_from6(x.m3));
}

fn row_from7(x: Row) -> Row {
    return Row(mat_from7(x.m0), mat_from7(x.m1), mat_from7(x.m2), mat_from7(x.m3));
}

/// Tile `tile` of a queue over `blocks` blocks of 32 queries of `heads` heads, as (query block,
/// head): the blocks that see the most keys first (the last of their sequences), so that the
/// last tiles taken are the cheapest. Shared by the forward and the dQ kernel.
fn query_tile(tile: u32, blocks: u32, heads: u32) -> vec2<u32> {
    return vec2<u32>(blocks - 1u - tile / heads, tile % heads);
}
