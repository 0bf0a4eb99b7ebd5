// The portable products' tiles in f16 (put before nf4_gemm.wgsl for the NF4 forward on
// devices with `shader-f16`, where asked for: WEBQLORA_F16_TILES=1; tile_f32.wgsl is the
// default): `T`, what tile_product.wgsl's workgroup tiles hold. Half the workgroup memory and
// its traffic; every operand is rounded to f16 (11 significant bits; magnitudes past 65,504
// become infinite) as it is staged, and the products and sums stay f32.

enable f16;

alias T = f16;
