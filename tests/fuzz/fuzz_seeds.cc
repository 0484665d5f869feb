// Writes the seed inputs of the fuzz targets, one directory per target under OUT_DIR,
// from the writers the readers are meant for (bundle files of FuzzBundle, its hnsw graph,
// requests against its catalog) and the head of the repository's real event log:
//   fuzz_seeds OUT_DIR tests/data/online-retail-slice.csv.gz
// tests/fuzz/run.sh runs it before fuzzing, so the seeds follow the formats as they change.
#include <zlib.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/bundle.h"
#include "engine/catalog.h"
#include "engine/embedding_index.h"
#include "engine/file_util.h"
#include "engine/onnx_mlp.h"
#include "google/protobuf/text_format.h"
#include "recserve/v1/recommender.pb.h"
#include "tests/fuzz/fuzz_bundle.h"
#include "tests/fuzz/fuzz_util.h"

namespace recserve::fuzz {
namespace {

void Write(const std::string& dir, const std::string& name, const std::string& bytes) {
  CheckStartup(MakeDirs(dir), dir.c_str());
  CheckStartup(WriteFileAtomically(dir + "/" + name, bytes), name.c_str());
}

void Copy(const std::string& from, const std::string& dir, const std::string& name) {
  auto bytes = ReadFileToString(from);
  CheckStartup(bytes.status(), from.c_str());
  Write(dir, name, *bytes);
}

// The first `lines` lines of a gzip file.
std::string GzipHead(const std::string& path, int lines) {
  gzFile in = gzopen(path.c_str(), "rb");
  if (in == nullptr) CheckStartup(absl::NotFoundError(path), "reading the event log");
  std::string text;
  char buffer[4096];
  while (lines > 0 && gzgets(in, buffer, sizeof(buffer)) != nullptr) {
    text += buffer;
    --lines;
  }
  gzclose(in);
  return text;
}

std::string Gzip(const std::string& text) {
  uLongf size = compressBound(text.size()) + 32;
  std::string out(size, '\0');
  z_stream z{};
  // windowBits 15 + 16: a gzip wrapper, as gzip(1) writes.
  if (deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) std::abort();
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(text.data()));
  z.avail_in = text.size();
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = out.size();
  if (deflate(&z, Z_FINISH) != Z_STREAM_END) std::abort();
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

void BundleSeeds(const std::string& out) {
  const std::string dir = testing::TempDir("fuzz_seeds");
  BundleContents b = FuzzBundle();
  auto catalog = Catalog::Create(b.items);
  CheckStartup(catalog.status(), "catalog");
  CheckStartup(MakeDirs(dir + "/1"), "bundle directory");
  CheckStartup(SaveHnswGraph(catalog->get(), FuzzHnswOptions(), dir + "/1/hnsw.bin"), "hnsw graph");
  b.manifest.mutable_recall()->set_hnsw_graph("hnsw.bin");
  b.manifest.mutable_recall()->set_embedding_index("hnsw");
  CheckStartup(WriteBundle(b, dir + "/1"), "bundle");
  // Seeds the readers refuse would only teach the fuzzer their first checks.
  CheckStartup(ReadBundle(dir + "/1").status(), "reading the bundle back");
  EmbeddingIndexOptions graph = FuzzHnswOptions();
  graph.hnsw_graph_path = dir + "/1/hnsw.bin";
  CheckStartup(BuildEmbeddingIndex(catalog->get(), graph).status(), "loading the hnsw graph");
  for (const char* file : {kItemsFile, kCovisitFile, kCalibrationFile}) {
    Copy(absl::StrCat(dir, "/1/", file), out + "/fuzz_safetensors", file);
  }
  Copy(dir + "/1/" + kRankerFile, out + "/fuzz_onnx", kRankerFile);
  auto deeper = SerializeOnnxMlp(testing::RandomMlp({6, 5, 3, 1}, 3));
  CheckStartup(deeper.status(), "onnx");
  Write(out + "/fuzz_onnx", "deeper.onnx", *deeper);
  auto linear = SerializeOnnxMlp(testing::RandomMlp({4, 1}, 4));
  CheckStartup(linear.status(), "onnx");
  Write(out + "/fuzz_onnx", "linear.onnx", *linear);
  Copy(dir + "/1/" + kManifestFile, out + "/fuzz_manifest", "hnsw.textproto");
  // The same manifest without the graph and with every optional user-model switch.
  auto manifest = ReadFileToString(dir + "/1/" + kManifestFile);
  CheckStartup(manifest.status(), "manifest");
  auto parsed = ParseManifest(*manifest);
  CheckStartup(parsed.status(), "manifest");
  parsed->mutable_recall()->clear_hnsw_graph();
  parsed->mutable_recall()->set_embedding_index("exact-int8");
  parsed->mutable_files()->RemoveLast();
  std::string text;
  google::protobuf::TextFormat::PrintToString(*parsed, &text);
  Write(out + "/fuzz_manifest", "exact.textproto", text);
  Copy(dir + "/1/hnsw.bin", out + "/fuzz_hnsw_graph", "hnsw.bin");
  std::filesystem::remove_all(dir);
}

void CsvSeeds(const std::string& out, const std::string& event_log) {
  const std::string head = GzipHead(event_log, 40);
  Write(out + "/fuzz_event_csv", "online-retail-head.csv", head);
  Write(out + "/fuzz_event_csv", "online-retail-head.csv.gz", Gzip(head));
  // The Taobao layout: extra column, behaviour names, millisecond timestamps.
  Write(out + "/fuzz_event_csv", "taobao.csv",
        "user_id,item_id,category_id,behavior_type,timestamp\n"
        "1,2268318,2520377,pv,1511544070000\n1,2333346,2520771,cart,1511561733000\n"
        "2,2576651,149192,fav,1511572885000\n2,3830808,4181361,buy,1511593493000\n"
        "1,2268318,2520377,pv,1511544070000\n");
  // BOM, CRLF, quoted fields with escaped quotes, spaces, a blank line, a fraction.
  Write(out + "/fuzz_event_csv", "quoted.csv",
        "\xEF\xBB\xBFTimestamp, Event ,ITEM,user\r\n"
        "1511658000.25,click,\"85123A\",\"u \"\"1\"\"\"\r\n\r\n"
        " 1511658001 , purchase , 71053 , u2 \r\n1511658002,view,\"SKU, 9\",u2\r\n");
  Write(out + "/fuzz_ratings_csv", "movielens.csv",
        "userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,1029,3.0,1260759179\n"
        "2,10,4.0,835355493\n2,17,5.0,835355681\n3,31,4.5,1298861675\n");
  Write(out + "/fuzz_ratings_csv", "no-header.csv",
        "1,31,2.5,1260759144\n1,1029,4,1260759179\n2,tt0114709,4.0,835355493\n");
  Write(out + "/fuzz_event_csv", "ratings.csv", "user,item,score,ts\n7,8,4,1511658000\n7,9,1,1511658001\n");
}

void RequestSeeds(const std::string& out) {
  const BundleContents b = FuzzBundle();
  const int64_t t = 1700000000000;
  auto write = [&](const std::string& name, const v1::RecommendRequest& r) {
    Write(out + "/fuzz_request", name, r.SerializeAsString());
  };
  v1::RecommendRequest by_id;
  by_id.set_n(10);
  by_id.set_user_id("u-1");
  by_id.mutable_context()->set_device(v1::MOBILE);
  by_id.mutable_context()->set_hour(9);
  for (int item : {1, 4, 9}) {
    v1::Event* e = by_id.add_events();
    e->set_item_id(b.items.ids[item]);
    e->set_type(v1::CLICK);
    e->set_timestamp_ms(t + item);
  }
  write("by_id.pb", by_id);

  v1::RecommendRequest by_key;
  by_key.set_n(20);
  for (int item : {2, 3, 6}) {
    v1::Event* e = by_key.add_events();
    e->set_item(b.items.keys[item]);
    e->set_type(item == 6 ? v1::PURCHASE : v1::CART);
    e->set_timestamp_ms(t + item);
  }
  v1::Event* unknown = by_key.add_events();
  unknown->set_item("SKU-unknown");
  unknown->set_type(v1::VIEW);
  unknown->set_timestamp_ms(t);
  v1::RecommendOptions* o = by_key.mutable_options();
  o->set_per_category_cap(1);
  o->set_include_timings(true);
  o->add_exclude_event_types(v1::PURCHASE);
  o->add_exclude_event_types(v1::CART);
  o->add_exclude_item_ids(b.items.ids[5]);
  o->add_exclude_items(b.items.keys[7]);
  write("by_key.pb", by_key);

  v1::RecommendRequest cold;
  cold.set_n(5);
  cold.mutable_options()->set_keep_purchased(true);
  cold.mutable_context()->set_hour(-1);
  write("cold.pb", cold);
}

}  // namespace
}  // namespace recserve::fuzz

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s OUT_DIR EVENT_LOG.csv.gz\n", argv[0]);
    return 2;
  }
  recserve::fuzz::BundleSeeds(argv[1]);
  recserve::fuzz::CsvSeeds(argv[1], argv[2]);
  recserve::fuzz::RequestSeeds(argv[1]);
  return 0;
}
