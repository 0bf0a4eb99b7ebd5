// The portable products' tiles in f32 (put before gemm.wgsl and nf4_gemm.wgsl;
// tile_f16.wgsl is the other choice): `T`, what tile_product.wgsl's workgroup tiles hold.

alias T = f32;
