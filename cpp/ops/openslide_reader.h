// Whole-slide images through libopenslide (https://openslide.org), behind integer
// handles so that JS never holds a raw pointer.
//
//   open(path) -> handle          openslide_open, then openslide_get_error
//   info(handle)                  level count, [L] (width, height), [L] downsamples,
//                                 every property (name, value); errors checked after each call
//   read_region_rgb(handle, x, y, level, w, h, background, out)
//                                 openslide_read_region into a premultiplied ARGB scratch
//                                 [h, w] uint32, then argb_to_rgb into out [h, w, 3] uint8
//   close(handle)
//
// (x, y) is the top-left corner in level-0 pixels, (w, h) the size in pixels of
// `level`, as openslide_read_region takes them.
//
// Pixel conversion follows openslide-python, which CLAM uses as
// `read_region(...).convert('RGB')`: lowlevel._load_image → _convert.argb2rgba
// un-premultiplies (a = 255: copied; 0 < a < 255: c' = (uint8)(255·c / a), integer
// division; a = 0: left as 0), and PIL's convert('RGB') then drops alpha. So a
// transparent pixel (outside the slide, or a region the scanner skipped) is (0, 0, 0);
// `background` replaces exactly those a = 0 pixels (pass 0, 0, 0 for CLAM's bytes).
//
// Thread safety: the handle table is guarded by a mutex; a read holds a shared
// reference to its slide, so close() during a read defers openslide_close until the
// read returns. OpenSlide itself allows concurrent reads on one openslide_t.
// OpenSlide's error state is sticky: once a call fails every later call on that
// handle fails with the same message, so the handle should be closed.
//
// Without MSTAR_WITH_OPENSLIDE (libopenslide absent at build time) every function
// except built(), library_version() and argb_to_rgb() throws ERR_UNSUPPORTED.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace mstar::openslide {

struct SlideInfo {
  // [L] (width, height) of each level, level 0 first.
  std::vector<std::array<int64_t, 2>> level_dimensions;
  // [L] downsample of each level relative to level 0.
  std::vector<double> level_downsamples;
  // Every property in openslide_get_property_names order.
  std::vector<std::pair<std::string, std::string>> properties;
};

// Largest region one read may return: w·h·3 bytes of RGB (the ARGB scratch is 4/3 of it).
constexpr int64_t kMaxRegionBytes = int64_t{1} << 30;

// True when the addon was built against libopenslide.
bool built();
// openslide_get_version(), or "" when not built.
std::string library_version();
// openslide_detect_vendor(path), or "" when OpenSlide does not recognize the file.
std::string detect_vendor(const std::string& path);

// Opens a slide. Throws ERR_FORMAT when OpenSlide does not recognize the file or
// reports an error opening it (the message names the file and OpenSlide's reason).
int64_t open(const std::string& path);
// Releases a handle; returns false when it was not open (closing twice is harmless).
bool close(int64_t handle);
// Geometry and properties of an open slide. Throws ERR_ARGUMENT for an unknown handle.
SlideInfo info(int64_t handle);
// Number of levels of an open slide.
int32_t level_count(int64_t handle);

// Reads a region as RGB [h, w, 3] into out (which must hold w·h·3 bytes).
// Throws ERR_RANGE for a level outside [0, level_count), w or h < 1, or a region above
// kMaxRegionBytes; ERR_FORMAT when OpenSlide fails to decode (corrupt tile, I/O error).
void read_region_rgb(int64_t handle, int64_t x, int64_t y, int32_t level, int64_t w, int64_t h,
                     const std::array<uint8_t, 3>& background, uint8_t* out);

// Premultiplied ARGB (uint32, A in the high byte) [n] → RGB [n, 3], as described above.
void argb_to_rgb(const uint32_t* argb, int64_t n, const std::array<uint8_t, 3>& background, uint8_t* rgb);

}  // namespace mstar::openslide
