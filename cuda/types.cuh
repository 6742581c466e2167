// Plain types shared by the CUDA kernels, their host entry points and the binding.
// No CUDA header is needed here, so cpp/binding/cuda.cc and the host emulation
// (test/native/cuda_emu) can include every cuda/<op>.cuh with an ordinary C++ compiler.
#pragma once
#include <cstddef>
#include <cstdint>

namespace mstar::cuda {

// Storage types; the values are DtypeCode in lib/native.ts. Kernels compute in
// float32 whatever the storage type. Float16 storage is not implemented on CUDA yet.
enum class Dtype : int32_t { F32 = 0, F16 = 1, BF16 = 2 };

inline size_t dtype_size(Dtype dtype) { return dtype == Dtype::F32 ? 4 : 2; }
inline const char* dtype_name(Dtype dtype) {
  switch (dtype) {
    case Dtype::F32: return "float32";
    case Dtype::F16: return "float16";
    case Dtype::BF16: return "bfloat16";
  }
  return "unknown";
}

// A region of device memory and how many elements of the operand's dtype it holds.
// Entry points check every element a kernel will touch against `elems` before the
// launch, because an out-of-range device access is not an exception but a lost device.
// data == nullptr means "absent" for optional operands.
struct DeviceSpan {
  void* data = nullptr;
  int64_t elems = 0;
};

}  // namespace mstar::cuda
