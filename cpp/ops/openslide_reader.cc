// OpenSlide reader: handle table, error checks after every libopenslide call,
// premultiplied ARGB → RGB. See openslide_reader.h for the contract.
#include "openslide_reader.h"

#include <memory>
#include <mutex>
#include <unordered_map>

#include "../core/error.h"

#ifdef MSTAR_WITH_OPENSLIDE
#include <openslide.h>
#endif

namespace mstar::openslide {

void argb_to_rgb(const uint32_t* argb, int64_t n, const std::array<uint8_t, 3>& background, uint8_t* rgb) {
  for (int64_t i = 0; i < n; i++) {
    const uint32_t v = argb[i];
    const uint32_t a = v >> 24;
    uint8_t* o = rgb + 3 * i;
    if (a == 255) {
      o[0] = static_cast<uint8_t>(v >> 16);
      o[1] = static_cast<uint8_t>(v >> 8);
      o[2] = static_cast<uint8_t>(v);
    } else if (a == 0) {
      o[0] = background[0];
      o[1] = background[1];
      o[2] = background[2];
    } else {
      // openslide-python _convert.c: u8 r = 255 * c / a (int arithmetic, truncated to u8).
      o[0] = static_cast<uint8_t>(255 * ((v >> 16) & 0xff) / a);
      o[1] = static_cast<uint8_t>(255 * ((v >> 8) & 0xff) / a);
      o[2] = static_cast<uint8_t>(255 * (v & 0xff) / a);
    }
  }
}

#ifdef MSTAR_WITH_OPENSLIDE

namespace {

// One open slide. Geometry is read once at open (and error-checked there); reads
// only touch `osr`, which OpenSlide allows from several threads at once.
struct Slide {
  std::string path;
  openslide_t* osr = nullptr;
  std::vector<std::array<int64_t, 2>> dims;
  std::vector<double> downsamples;

  ~Slide() {
    if (osr != nullptr) openslide_close(osr);
  }
};

std::mutex g_mutex;
std::unordered_map<int64_t, std::shared_ptr<Slide>> g_slides;
int64_t g_next_handle = 1;

// Throws ERR_FORMAT with OpenSlide's message when the handle is in its error state.
void check_error(const Slide& slide, const char* call) {
  const char* err = openslide_get_error(slide.osr);
  if (err != nullptr) {
    fail(ErrorCode::Format, slide.path + ": OpenSlide " + call + " failed: " + err);
  }
}

std::shared_ptr<Slide> lookup(int64_t handle) {
  std::lock_guard<std::mutex> lock(g_mutex);
  auto it = g_slides.find(handle);
  MSTAR_CHECK(it != g_slides.end(), Argument, "OpenSlide handle " << handle << " is not open (closed already?)");
  return it->second;
}

}  // namespace

bool built() { return true; }

std::string library_version() {
  const char* v = openslide_get_version();
  return v == nullptr ? std::string() : std::string(v);
}

std::string detect_vendor(const std::string& path) {
  const char* vendor = openslide_detect_vendor(path.c_str());
  return vendor == nullptr ? std::string() : std::string(vendor);
}

int64_t open(const std::string& path) {
  auto slide = std::make_shared<Slide>();
  slide->path = path;
  slide->osr = openslide_open(path.c_str());
  MSTAR_CHECK(slide->osr != nullptr, Format, path << ": not a format OpenSlide reads (or the file is missing)");
  check_error(*slide, "open");

  const int32_t levels = openslide_get_level_count(slide->osr);
  check_error(*slide, "get_level_count");
  MSTAR_CHECK(levels >= 1, Format, path << ": OpenSlide reports " << levels << " levels");
  slide->dims.resize(static_cast<size_t>(levels));
  slide->downsamples.resize(static_cast<size_t>(levels));
  for (int32_t l = 0; l < levels; l++) {
    int64_t w = -1, h = -1;
    openslide_get_level_dimensions(slide->osr, l, &w, &h);
    check_error(*slide, "get_level_dimensions");
    MSTAR_CHECK(w > 0 && h > 0, Format, path << ": level " << l << " has size " << w << "×" << h);
    const double ds = openslide_get_level_downsample(slide->osr, l);
    check_error(*slide, "get_level_downsample");
    MSTAR_CHECK(ds > 0, Format, path << ": level " << l << " has downsample " << ds);
    slide->dims[static_cast<size_t>(l)] = {w, h};
    slide->downsamples[static_cast<size_t>(l)] = ds;
  }
  std::lock_guard<std::mutex> lock(g_mutex);
  const int64_t handle = g_next_handle++;
  g_slides.emplace(handle, std::move(slide));
  return handle;
}

bool close(int64_t handle) {
  std::shared_ptr<Slide> slide;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    auto it = g_slides.find(handle);
    if (it == g_slides.end()) return false;
    slide = std::move(it->second);
    g_slides.erase(it);
  }
  // openslide_close runs here, or when the last in-flight read drops its reference.
  return true;
}

SlideInfo info(int64_t handle) {
  std::shared_ptr<Slide> slide = lookup(handle);
  SlideInfo out;
  out.level_dimensions = slide->dims;
  out.level_downsamples = slide->downsamples;
  const char* const* names = openslide_get_property_names(slide->osr);
  check_error(*slide, "get_property_names");
  for (size_t i = 0; names != nullptr && names[i] != nullptr; i++) {
    const char* value = openslide_get_property_value(slide->osr, names[i]);
    check_error(*slide, "get_property_value");
    out.properties.emplace_back(names[i], value == nullptr ? "" : value);
  }
  return out;
}

int32_t level_count(int64_t handle) { return static_cast<int32_t>(lookup(handle)->dims.size()); }

void read_region_rgb(int64_t handle, int64_t x, int64_t y, int32_t level, int64_t w, int64_t h,
                     const std::array<uint8_t, 3>& background, uint8_t* out) {
  std::shared_ptr<Slide> slide = lookup(handle);
  const int32_t levels = static_cast<int32_t>(slide->dims.size());
  MSTAR_CHECK(level >= 0 && level < levels, Range, slide->path << ": level " << level << " is out of range [0, " << levels << ")");
  MSTAR_CHECK(w >= 1 && h >= 1, Range, "region size " << w << "×" << h << " must be at least 1×1");
  MSTAR_CHECK(w <= kMaxRegionBytes / 3 / h, Range, "region " << w << "×" << h << " exceeds the " << kMaxRegionBytes << "-byte limit of one read");
  const int64_t n = w * h;
  std::unique_ptr<uint32_t[]> argb(new uint32_t[static_cast<size_t>(n)]);
  openslide_read_region(slide->osr, argb.get(), x, y, level, w, h);
  check_error(*slide, "read_region");
  argb_to_rgb(argb.get(), n, background, out);
}

#else  // !MSTAR_WITH_OPENSLIDE

namespace {
[[noreturn]] void not_built() {
  fail(ErrorCode::Unsupported,
       "this build of mstar-node has no OpenSlide support (libopenslide was not found at build time); "
       "install libopenslide-dev and rebuild, or use the 'sharp' slide backend");
}
}  // namespace

bool built() { return false; }
std::string library_version() { return std::string(); }
std::string detect_vendor(const std::string&) { not_built(); }
int64_t open(const std::string&) { not_built(); }
bool close(int64_t) { not_built(); }
SlideInfo info(int64_t) { not_built(); }
int32_t level_count(int64_t) { not_built(); }
void read_region_rgb(int64_t, int64_t, int64_t, int32_t, int64_t, int64_t, const std::array<uint8_t, 3>&, uint8_t*) {
  not_built();
}

#endif  // MSTAR_WITH_OPENSLIDE

}  // namespace mstar::openslide
