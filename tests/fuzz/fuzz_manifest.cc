// Fuzzes the bundle manifest (manifest.textproto): the protobuf text parse and the
// reader's checks (ParseManifest = parse + ValidateManifest, engine/bundle.h). An accepted
// manifest names every file by a plain name with a checksum ReadBundle can compare (64
// lowercase hex digits, as Sha256Hex writes), and printed back as text is accepted again.
#include <cstdint>
#include <string>

#include "engine/bundle.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/message_differencer.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace recserve;
  auto manifest = ParseManifest(std::string(reinterpret_cast<const char*>(data), size));
  if (!manifest.ok()) return 0;
  for (const v1::FileEntry& e : manifest->files()) {
    FUZZ_CHECK(!e.name().empty() && e.name().find('/') == std::string::npos, e.name());
    FUZZ_CHECK(e.sha256().size() == 64 && e.sha256().find_first_not_of("0123456789abcdef") == std::string::npos,
               absl::StrCat("the checksum of ", e.name(), " is not what Sha256Hex writes"));
  }
  std::string text;
  FUZZ_CHECK(google::protobuf::TextFormat::PrintToString(*manifest, &text), "cannot print the manifest");
  auto again = ParseManifest(text);
  FUZZ_CHECK(again.ok(), again.status().ToString());
  FUZZ_CHECK(google::protobuf::util::MessageDifferencer::Equals(*again, *manifest), "manifest differs after a rewrite");
  return 0;
}
