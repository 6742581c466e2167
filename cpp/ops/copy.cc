// Strided gather + dtype conversion (see copy.h for the contract).
//
// The index space is coalesced first (strided.h), so contiguous sources become one
// long run. Each run is either a straight conversion (memcpy when the dtypes agree)
// or, for a strided source, a gather into a small stack block followed by the same
// contiguous conversion, so the conversion loops are always unit-stride and vectorize.
// f32<->f16 use F16C / AVX-512 VCVTPS2PH/VCVTPH2PS when present (bit-identical to the
// portable code); bfloat16 and the rest are plain loops that MSTAR_SIMD_DISPATCH
// (simd_math.h) compiles and auto-vectorizes once per SIMD level.
#include "copy.h"

#include <algorithm>
#include <cstring>

#include "../core/thread_pool.h"
#include "strided.h"

namespace mstar {

const char* dtype_name(DtypeCode dtype) {
  switch (dtype) {
    case DtypeCode::Float32: return "float32";
    case DtypeCode::Float16: return "float16";
    case DtypeCode::BFloat16: return "bfloat16";
  }
  return "unknown";
}

namespace {

// Memory-bound: a chunk this large amortizes waking a thread many times over.
constexpr int64_t kCopyGrain = int64_t{1} << 16;
// Transposed copies go tile by tile; 32 floats span two cache lines.
constexpr int64_t kTile = 32;

template <typename Src, typename Dst, typename Convert>
MSTAR_INLINE void convert_loop(const void* src, void* dst, int64_t n, Convert convert) {
  const Src* s = static_cast<const Src*>(src);
  Dst* d = static_cast<Dst*>(dst);
  for (int64_t i = 0; i < n; ++i) d[i] = convert(s[i]);
}

// Every non-identity pair; identity pairs are memcpy'd by the caller.
template <class V>  // V: the SIMD level; the loops are auto-vectorized for it
MSTAR_INLINE void convert_body(const void* src, DtypeCode src_dtype, void* dst, DtypeCode dst_dtype, int64_t n) {
  using F = DtypeCode;
  if (src_dtype == F::Float32 && dst_dtype == F::Float16) {
    convert_loop<float, uint16_t>(src, dst, n, [](float v) { return float_to_half(v); });
  } else if (src_dtype == F::Float32 && dst_dtype == F::BFloat16) {
    convert_loop<float, uint16_t>(src, dst, n, [](float v) { return float_to_bfloat16(v); });
  } else if (src_dtype == F::Float16 && dst_dtype == F::Float32) {
    convert_loop<uint16_t, float>(src, dst, n, [](uint16_t v) { return half_to_float(v); });
  } else if (src_dtype == F::BFloat16 && dst_dtype == F::Float32) {
    convert_loop<uint16_t, float>(src, dst, n, [](uint16_t v) { return bfloat16_to_float(v); });
  } else if (src_dtype == F::Float16 && dst_dtype == F::BFloat16) {
    // Widening is exact, so this rounds once.
    convert_loop<uint16_t, uint16_t>(src, dst, n, [](uint16_t v) { return float_to_bfloat16(half_to_float(v)); });
  } else if (src_dtype == F::BFloat16 && dst_dtype == F::Float16) {
    convert_loop<uint16_t, uint16_t>(src, dst, n, [](uint16_t v) { return float_to_half(bfloat16_to_float(v)); });
  }
}

MSTAR_SIMD_DISPATCH(convert_dispatch, convert_body)

#if MSTAR_SIMD_X86
// Hardware half conversions. Immediate 0 (_MM_FROUND_TO_NEAREST_INT) is round to
// nearest even; these instructions ignore MXCSR's FTZ/DAZ, so subnormals are exact.
__attribute__((target("avx2,f16c"))) void float_to_half_f16c(const float* s, uint16_t* d, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i), h);
  }
  for (; i < n; ++i) d[i] = float_to_half(s[i]);
}

__attribute__((target("avx2,f16c"))) void half_to_float_f16c(const uint16_t* s, float* d, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i));
    _mm256_storeu_ps(d + i, _mm256_cvtph_ps(h));
  }
  for (; i < n; ++i) d[i] = half_to_float(s[i]);
}

// GCC 12 warns about the intentionally undefined pass-through operand inside these intrinsics.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
MSTAR_TARGET_AVX512 void float_to_half_avx512(const float* s, uint16_t* d, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m256i h = _mm512_cvtps_ph(_mm512_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + i), h);
  }
  for (; i < n; ++i) d[i] = float_to_half(s[i]);
}

MSTAR_TARGET_AVX512 void half_to_float_avx512(const uint16_t* s, float* d, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i));
    _mm512_storeu_ps(d + i, _mm512_cvtph_ps(h));
  }
  for (; i < n; ++i) d[i] = half_to_float(s[i]);
}
#pragma GCC diagnostic pop
#endif

// Serial contiguous conversion of one run.
void convert_run(const void* src, DtypeCode src_dtype, void* dst, DtypeCode dst_dtype, int64_t n) {
  if (n <= 0) return;
  if (src_dtype == dst_dtype) {
    std::memcpy(dst, src, static_cast<size_t>(n * dtype_size(src_dtype)));
    return;
  }
#if MSTAR_SIMD_X86
  const SimdLevel level = simd_level();
  const bool f16c = level >= SimdLevel::Avx2 && cpu_features().f16c;
  if (src_dtype == DtypeCode::Float32 && dst_dtype == DtypeCode::Float16 && f16c) {
    if (level == SimdLevel::Avx512) return float_to_half_avx512(static_cast<const float*>(src), static_cast<uint16_t*>(dst), n);
    return float_to_half_f16c(static_cast<const float*>(src), static_cast<uint16_t*>(dst), n);
  }
  if (src_dtype == DtypeCode::Float16 && dst_dtype == DtypeCode::Float32 && f16c) {
    if (level == SimdLevel::Avx512) return half_to_float_avx512(static_cast<const uint16_t*>(src), static_cast<float*>(dst), n);
    return half_to_float_f16c(static_cast<const uint16_t*>(src), static_cast<float*>(dst), n);
  }
#endif
  convert_dispatch(src, src_dtype, dst, dst_dtype, n);
}

// dst[j] = src[j·stride] for j < n, elements of type T.
template <typename T>
void gather(const void* src, int64_t stride, void* dst, int64_t n) {
  const T* s = static_cast<const T*>(src);
  T* d = static_cast<T*>(dst);
  if (stride == 0) {
    std::fill(d, d + n, s[0]);
    return;
  }
  for (int64_t j = 0; j < n; ++j) d[j] = s[j * stride];
}

void gather_bytes(const void* src, int64_t stride, int64_t element_size, void* dst, int64_t n) {
  if (element_size == 4) gather<uint32_t>(src, stride, dst, n);
  else gather<uint16_t>(src, stride, dst, n);
}

// One run of the strided copy: `n` source elements `stride` apart into contiguous dst.
void copy_run(const char* src, int64_t stride, DtypeCode src_dtype, char* dst, DtypeCode dst_dtype, int64_t n) {
  const int64_t src_size = dtype_size(src_dtype);
  if (stride == 1) return convert_run(src, src_dtype, dst, dst_dtype, n);
  if (src_dtype == dst_dtype) return gather_bytes(src, stride, src_size, dst, n);
  // Gather a block into the stack, then convert it with the unit-stride kernels.
  constexpr int64_t kBlock = 512;
  alignas(64) uint32_t block[kBlock];
  const int64_t dst_size = dtype_size(dst_dtype);
  for (int64_t j = 0; j < n; j += kBlock) {
    const int64_t m = std::min(kBlock, n - j);
    gather_bytes(src + j * stride * src_size, stride, src_size, block, m);
    convert_run(block, src_dtype, dst + j * dst_size, dst_dtype, m);
  }
}

// A transposed read: the dst-contiguous inner dim walks src with a stride while some
// other dim (the tile dim) is src-contiguous. Returns that dim, or -1 when runs are
// already cache-friendly (unit stride, broadcast, or no src-contiguous dim).
int transposed_dim(const StridedLayout<2>& layout) {
  const int64_t inner = layout.inner_stride(0);
  if (layout.rank < 2 || inner == 1 || inner == -1 || inner == 0 || layout.inner_size() < kTile) return -1;
  for (int k = layout.rank - 2; k >= 0; --k) {
    if ((layout.strides[0][k] == 1 || layout.strides[0][k] == -1) && layout.shape[k] >= kTile) return k;
  }
  return -1;
}

// d[r·d_row + c] = s[r·s_row + c·s_col] for r < rows, c < cols (elements of type T).
template <typename T>
void gather_tile(const char* src, int64_t s_row, int64_t s_col, char* dst, int64_t d_row, int64_t rows, int64_t cols) {
  const T* s = reinterpret_cast<const T*>(src);
  T* d = reinterpret_cast<T*>(dst);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) d[r * d_row + c] = s[r * s_row + c * s_col];
  }
}

// Copies a transposed layout in kTile × kTile tiles of (tile dim, inner dim): the kTile
// dst rows of a tile read the same kTile src cache lines, instead of every element of
// a long run touching a new line. Converting copies gather each tile into a stack
// block first. Parallel over (other dims × tile rows).
void copy_tiled(const StridedLayout<2>& layout, int tile_dim, const char* s, DtypeCode src_dtype, char* d,
                DtypeCode dst_dtype) {
  const int64_t ss = dtype_size(src_dtype), ds = dtype_size(dst_dtype);
  const int inner = layout.rank - 1;
  const int64_t rows = layout.shape[tile_dim], cols = layout.shape[inner];
  const int64_t s_row = layout.strides[0][tile_dim], s_col = layout.strides[0][inner];
  const int64_t d_row = layout.strides[1][tile_dim];
  const int64_t row_tiles = (rows + kTile - 1) / kTile;
  const int64_t batch = layout.numel / (rows * cols);  // every other dim
  auto gather = ss == 4 ? &gather_tile<uint32_t> : &gather_tile<uint16_t>;
  parallel_for(batch * row_tiles, std::max<int64_t>(1, kCopyGrain / (kTile * cols)), [&](int64_t begin, int64_t end) {
    alignas(64) uint32_t block[kTile * kTile];
    for (int64_t task = begin; task < end; ++task) {
      // Offsets of batch index task / row_tiles, over the dims other than tile_dim and inner.
      int64_t rest = task / row_tiles, src_base = 0, dst_base = 0;
      for (int k = inner - 1; k >= 0; --k) {
        if (k == tile_dim) continue;
        const int64_t i = rest % layout.shape[k];
        rest /= layout.shape[k];
        src_base += i * layout.strides[0][k];
        dst_base += i * layout.strides[1][k];
      }
      const int64_t r0 = (task % row_tiles) * kTile, height = std::min(kTile, rows - r0);
      for (int64_t c0 = 0; c0 < cols; c0 += kTile) {
        const int64_t width = std::min(kTile, cols - c0);
        const char* from = s + (src_base + r0 * s_row + c0 * s_col) * ss;
        char* to = d + (dst_base + r0 * d_row + c0) * ds;
        if (src_dtype == dst_dtype) {
          gather(from, s_row, s_col, to, d_row, height, width);
          continue;
        }
        gather(from, s_row, s_col, reinterpret_cast<char*>(block), kTile, height, width);
        for (int64_t r = 0; r < height; ++r) {
          convert_run(reinterpret_cast<char*>(block) + r * kTile * ss, src_dtype, to + r * d_row * ds, dst_dtype, width);
        }
      }
    }
  });
}

}  // namespace

void convert_contiguous(const void* src, DtypeCode src_dtype, void* dst, DtypeCode dst_dtype, int64_t n) {
  const char* s = static_cast<const char*>(src);
  char* d = static_cast<char*>(dst);
  const int64_t ss = dtype_size(src_dtype), ds = dtype_size(dst_dtype);
  parallel_for(n, kCopyGrain, [&](int64_t begin, int64_t end) {
    convert_run(s + begin * ss, src_dtype, d + begin * ds, dst_dtype, end - begin);
  });
}

void copy_strided(const void* src, DtypeCode src_dtype, int64_t src_offset, const std::vector<int64_t>& shape,
                  const std::vector<int64_t>& src_strides, void* dst, DtypeCode dst_dtype) {
  const std::vector<int64_t> dst_strides = contiguous_strides(shape);
  const std::vector<int64_t>* strides[2] = {&src_strides, &dst_strides};
  const StridedLayout<2> layout = make_layout<2>(shape, strides);
  const int64_t ss = dtype_size(src_dtype), ds = dtype_size(dst_dtype);
  const char* s = static_cast<const char*>(src) + src_offset * ss;
  char* d = static_cast<char*>(dst);
  const int64_t inner_stride = layout.inner_stride(0);
  const int tile_dim = transposed_dim(layout);
  if (tile_dim >= 0) return copy_tiled(layout, tile_dim, s, src_dtype, d, dst_dtype);
  parallel_for(layout.numel, kCopyGrain, [&](int64_t begin, int64_t end) {
    for_each_run(layout, begin, end, [&](const int64_t* offsets, int64_t count) {
      copy_run(s + offsets[0] * ss, inner_stride, src_dtype, d + offsets[1] * ds, dst_dtype, count);
    });
  });
}

}  // namespace mstar
