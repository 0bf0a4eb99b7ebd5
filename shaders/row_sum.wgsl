// The sum over a workgroup of 64 invocations of one value each (a row's partial sums), for the
// kernels that take a row a workgroup (rmsnorm_residual, rmsnorm_backward_rows; appended to
// their files): a tree in workgroup memory, six barrier rounds, every invocation gets the
// total. Call it from uniform control flow.

const ROW_WIDTH: u32 = 64u;

var<workgroup> row_partial: array<f32, ROW_WIDTH>;

fn row_sum(lid: u32, value: f32) -> f32 {
    row_partial[lid] = value;
    for (var span = ROW_WIDTH / 2u; span > 0u; span /= 2u) {
        workgroupBarrier();
        if lid < span {
            row_partial[lid] += row_partial[lid + span];
        }
    }
    workgroupBarrier();
    return row_partial[0];
}
