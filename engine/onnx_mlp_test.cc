#include "engine/onnx_mlp.h"

#include <onnx/checker.h>
#include <onnx/onnx_pb.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/mlp.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace recserve {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr char kName[] = "ranker.onnx";

Mlp RandomMlp(const std::vector<int>& sizes, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 0.5f);
  Mlp mlp;
  for (size_t i = 0; i + 1 < sizes.size(); ++i) {
    DenseLayer l;
    l.in = sizes[i];
    l.out = sizes[i + 1];
    l.weight.resize(static_cast<size_t>(l.in) * l.out);
    l.bias.resize(l.out);
    for (float& w : l.weight) w = dist(rng);
    for (float& b : l.bias) b = dist(rng);
    l.relu = i + 2 < sizes.size();
    mlp.layers.push_back(std::move(l));
  }
  return mlp;
}

void ExpectBitEqual(const std::vector<float>& a, const std::vector<float>& b) {
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
}

void ExpectError(const absl::StatusOr<Mlp>& r, const std::vector<std::string>& parts) {
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  const std::string msg(r.status().message());
  EXPECT_THAT(msg, StartsWith(kName));
  for (const std::string& p : parts) EXPECT_THAT(msg, HasSubstr(p));
}

// Builds ModelProtos by hand, the way exporters lay them out.
class ModelBuilder {
 public:
  explicit ModelBuilder(int k) {
    model_.set_ir_version(8);
    model_.add_opset_import()->set_version(13);
    onnx::ValueInfoProto* in = graph()->add_input();
    in->set_name("x");
    onnx::TypeProto_Tensor* tt = in->mutable_type()->mutable_tensor_type();
    tt->set_elem_type(onnx::TensorProto::FLOAT);
    tt->mutable_shape()->add_dim()->set_dim_param("batch");
    tt->mutable_shape()->add_dim()->set_dim_value(k);
  }

  onnx::GraphProto* graph() { return model_.mutable_graph(); }

  onnx::TensorProto* Initializer(const std::string& name, const std::vector<int64_t>& dims,
                                 const std::vector<float>& values, bool raw = true) {
    onnx::TensorProto* t = graph()->add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::FLOAT);
    for (int64_t d : dims) t->add_dims(d);
    if (raw) {
      t->set_raw_data(
          std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float)));
    } else {
      for (float v : values) t->add_float_data(v);
    }
    return t;
  }

  onnx::NodeProto* Node(const std::string& op, const std::string& name,
                        const std::vector<std::string>& inputs, const std::string& output) {
    onnx::NodeProto* n = graph()->add_node();
    n->set_op_type(op);
    n->set_name(name);
    for (const std::string& i : inputs) n->add_input(i);
    n->add_output(output);
    return n;
  }

  static void IntAttr(onnx::NodeProto* n, const std::string& name, int64_t v) {
    onnx::AttributeProto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(v);
  }
  static void FloatAttr(onnx::NodeProto* n, const std::string& name, float v) {
    onnx::AttributeProto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::FLOAT);
    a->set_f(v);
  }

  void Output(const std::string& name) {
    onnx::ValueInfoProto* out = graph()->add_output();
    out->set_name(name);
    onnx::TypeProto_Tensor* tt = out->mutable_type()->mutable_tensor_type();
    tt->set_elem_type(onnx::TensorProto::FLOAT);
    tt->mutable_shape()->add_dim()->set_dim_param("batch");
    tt->mutable_shape()->add_dim()->set_dim_value(1);
  }

  std::string Bytes() const { return model_.SerializeAsString(); }

 private:
  onnx::ModelProto model_;
};

// A 2 -> 3 -> 1 model with Gemm(transB = 1): the baseline the refusal tests break.
struct TinyModel {
  std::vector<float> w0 = {0.5f, -1.0f, 2.0f, 0.25f, -0.5f, 1.5f};  // [3 x 2]
  std::vector<float> b0 = {0.1f, -0.2f, 0.3f};
  std::vector<float> w1 = {1.0f, -2.0f, 0.5f};  // [1 x 3]
  std::vector<float> b1 = {0.05f};
};

TEST(OnnxMlpTest, RoundTripIsBitExact) {
  const Mlp mlp = RandomMlp({16, 32, 8, 1}, 7);
  absl::StatusOr<std::string> bytes = SerializeOnnxMlp(mlp);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  absl::StatusOr<Mlp> back = ParseOnnxMlp(*bytes, kName);
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->layers.size(), mlp.layers.size());
  for (size_t i = 0; i < mlp.layers.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(back->layers[i].in, mlp.layers[i].in);
    EXPECT_EQ(back->layers[i].out, mlp.layers[i].out);
    EXPECT_EQ(back->layers[i].relu, mlp.layers[i].relu);
    ExpectBitEqual(back->layers[i].weight, mlp.layers[i].weight);
    ExpectBitEqual(back->layers[i].bias, mlp.layers[i].bias);
  }
}

TEST(OnnxMlpTest, WrittenModelPassesOnnxChecker) {
  absl::StatusOr<std::string> bytes = SerializeOnnxMlp(RandomMlp({16, 32, 8, 1}, 3));
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  onnx::ModelProto model;
  ASSERT_TRUE(model.ParseFromString(*bytes));
  try {
    onnx::checker::check_model(model);
  } catch (const std::exception& e) {
    FAIL() << "check_model: " << e.what();
  }
}

TEST(OnnxMlpTest, WrittenModelHasTorchExportLayout) {
  absl::StatusOr<std::string> bytes = SerializeOnnxMlp(RandomMlp({5, 4, 1}, 1));
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  onnx::ModelProto model;
  ASSERT_TRUE(model.ParseFromString(*bytes));
  EXPECT_EQ(model.ir_version(), 8);
  EXPECT_EQ(model.producer_name(), "recserve");
  ASSERT_EQ(model.opset_import_size(), 1);
  EXPECT_EQ(model.opset_import(0).domain(), "");
  EXPECT_EQ(model.opset_import(0).version(), 13);
  const onnx::GraphProto& g = model.graph();
  ASSERT_EQ(g.input_size(), 1);
  EXPECT_EQ(g.input(0).name(), "features");
  const onnx::TensorShapeProto& in_shape = g.input(0).type().tensor_type().shape();
  ASSERT_EQ(in_shape.dim_size(), 2);
  EXPECT_EQ(in_shape.dim(0).dim_param(), "batch");
  EXPECT_EQ(in_shape.dim(1).dim_value(), 5);
  ASSERT_EQ(g.output_size(), 1);
  EXPECT_EQ(g.output(0).name(), "score");
  EXPECT_EQ(g.output(0).type().tensor_type().shape().dim(1).dim_value(), 1);
  std::vector<std::string> ops;
  for (const onnx::NodeProto& n : g.node()) ops.push_back(n.op_type());
  EXPECT_EQ(ops, (std::vector<std::string>{"Gemm", "Relu", "Gemm", "Sigmoid"}));
  bool trans_b = false;
  for (const onnx::AttributeProto& a : g.node(0).attribute()) {
    if (a.name() == "transB") trans_b = a.i() == 1;
  }
  EXPECT_TRUE(trans_b);
  // The first weight initializer is [out x in] in raw_data.
  const onnx::TensorProto& w = g.initializer(0);
  ASSERT_EQ(w.dims_size(), 2);
  EXPECT_EQ(w.dims(0), 4);
  EXPECT_EQ(w.dims(1), 5);
  EXPECT_EQ(w.raw_data().size(), 4u * 5u * sizeof(float));
}

TEST(OnnxMlpTest, SerializeRefusesInvalidMlp) {
  Mlp mlp = RandomMlp({4, 3, 1}, 2);
  mlp.layers[0].relu = false;
  EXPECT_EQ(SerializeOnnxMlp(mlp).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(OnnxMlpTest, WriteThenReadFileRoundTrips) {
  const std::string path =
      absl::StrCat(::testing::TempDir(), "/onnx_mlp_test_", ::getpid(), ".onnx");
  const Mlp mlp = RandomMlp({6, 4, 1}, 11);
  ASSERT_TRUE(WriteOnnxMlp(mlp, path).ok());
  absl::StatusOr<Mlp> back = ReadOnnxMlp(path);
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectBitEqual(back->layers[1].weight, mlp.layers[1].weight);
  std::remove(path.c_str());
}

TEST(OnnxMlpTest, ReadMissingFileIsNotFound) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/no_such_model.onnx");
  const absl::Status s = ReadOnnxMlp(path).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(path));
}

TEST(OnnxMlpTest, GarbageBytesAreRefused) {
  std::mt19937 rng(5);
  std::string garbage(4096, '\0');
  for (char& c : garbage) c = static_cast<char>(rng());
  ExpectError(ParseOnnxMlp(garbage, kName), {});
  ExpectError(ParseOnnxMlp("", kName), {});
  ExpectError(ParseOnnxMlp("not a model at all", kName), {});
}

TEST(OnnxMlpTest, TruncatedModelIsRefused) {
  absl::StatusOr<std::string> bytes = SerializeOnnxMlp(RandomMlp({8, 4, 1}, 9));
  ASSERT_TRUE(bytes.ok());
  for (size_t len : {bytes->size() / 4, bytes->size() / 2, bytes->size() - 1}) {
    EXPECT_FALSE(ParseOnnxMlp(bytes->substr(0, len), kName).ok()) << len;
  }
}

TEST(OnnxMlpTest, ConvNodeIsRefusedNamingNodeAndOp) {
  ModelBuilder b(2);
  TinyModel t;
  b.Initializer("w0", {3, 2}, t.w0);
  b.Initializer("b0", {3}, t.b0);
  b.Initializer("w1", {1, 3}, t.w1);
  b.Initializer("b1", {1}, t.b1);
  b.Node("Gemm", "fc0", {"x", "w0", "b0"}, "h0");
  ModelBuilder::IntAttr(b.graph()->mutable_node(0), "transB", 1);
  b.Node("Relu", "relu0", {"h0"}, "r0");
  b.Node("Gemm", "fc1", {"r0", "w1", "b1"}, "h1");
  ModelBuilder::IntAttr(b.graph()->mutable_node(2), "transB", 1);
  b.Node("Conv", "conv1", {"h1", "w1"}, "c");
  b.Node("Sigmoid", "sig", {"c"}, "y");
  b.Output("y");
  const absl::StatusOr<Mlp> r = ParseOnnxMlp(b.Bytes(), kName);
  ExpectError(r, {});
  EXPECT_EQ(r.status().message(),
            "ranker.onnx: node 3 'conv1' (Conv): unsupported op; recserve reads MLPs of "
            "Gemm/MatMul+Add, Relu and a final Sigmoid");
}

TEST(OnnxMlpTest, GemmWithTransBZeroIsTransposedIntoOutByIn) {
  TinyModel t;
  // Same weights as TinyModel, stored [in x out] for transB = 0.
  const std::vector<float> w0_t = {t.w0[0], t.w0[2], t.w0[4], t.w0[1], t.w0[3], t.w0[5]};
  ModelBuilder b(2);
  b.Initializer("w0", {2, 3}, w0_t);
  b.Initializer("b0", {1, 3}, t.b0);
  b.Initializer("w1", {3, 1}, t.w1);
  b.Initializer("b1", {1}, t.b1);
  onnx::NodeProto* fc0 = b.Node("Gemm", "fc0", {"x", "w0", "b0"}, "h0");
  ModelBuilder::FloatAttr(fc0, "alpha", 1.0f);
  ModelBuilder::FloatAttr(fc0, "beta", 1.0f);
  ModelBuilder::IntAttr(fc0, "transA", 0);
  ModelBuilder::IntAttr(fc0, "transB", 0);
  b.Node("Relu", "relu0", {"h0"}, "r0");
  b.Node("Gemm", "fc1", {"r0", "w1", "b1"}, "h1");
  b.Node("Sigmoid", "sig", {"h1"}, "y");
  b.Output("y");
  absl::StatusOr<Mlp> mlp = ParseOnnxMlp(b.Bytes(), kName);
  ASSERT_TRUE(mlp.ok()) << mlp.status();
  EXPECT_EQ(mlp->LayerSizes(), (std::vector<int>{2, 3, 1}));
  ExpectBitEqual(mlp->layers[0].weight, t.w0);
  ExpectBitEqual(mlp->layers[1].weight, t.w1);

  // Score by hand with x [in] against the transB = 0 layout: h[o] = sum_i x[i] * B[i][o].
  const std::vector<float> x = {0.7f, -1.3f};
  double h[3];
  for (int o = 0; o < 3; ++o) {
    h[o] = t.b0[o];
    for (int i = 0; i < 2; ++i) h[o] += double{x[i]} * w0_t[i * 3 + o];
    h[o] = std::max(h[o], 0.0);
  }
  double logit = t.b1[0];
  for (int i = 0; i < 3; ++i) logit += h[i] * t.w1[i];
  const double want = 1.0 / (1.0 + std::exp(-logit));
  float got = 0;
  ReferenceScore(*mlp, x, 1, absl::Span<float>(&got, 1));
  EXPECT_NEAR(got, want, 1e-6);
}

TEST(OnnxMlpTest, MatMulPlusAddIsAccepted) {
  TinyModel t;
  const std::vector<float> w0_t = {t.w0[0], t.w0[2], t.w0[4], t.w0[1], t.w0[3], t.w0[5]};
  ModelBuilder b(2);
  b.Initializer("w0", {2, 3}, w0_t);
  b.Initializer("b0", {3}, t.b0);
  b.Initializer("w1", {3, 1}, t.w1);
  b.Initializer("b1", {1, 1}, t.b1);
  b.Node("MatMul", "mm0", {"x", "w0"}, "m0");
  b.Node("Add", "add0", {"m0", "b0"}, "h0");
  b.Node("Relu", "relu0", {"h0"}, "r0");
  b.Node("MatMul", "mm1", {"r0", "w1"}, "m1");
  b.Node("Add", "add1", {"b1", "m1"}, "h1");  // bias first is the same Add
  b.Node("Sigmoid", "sig", {"h1"}, "y");
  b.Output("y");
  absl::StatusOr<Mlp> mlp = ParseOnnxMlp(b.Bytes(), kName);
  ASSERT_TRUE(mlp.ok()) << mlp.status();
  EXPECT_EQ(mlp->LayerSizes(), (std::vector<int>{2, 3, 1}));
  ExpectBitEqual(mlp->layers[0].weight, t.w0);
  ExpectBitEqual(mlp->layers[0].bias, t.b0);
  ExpectBitEqual(mlp->layers[1].bias, t.b1);
  EXPECT_TRUE(mlp->layers[0].relu);
  EXPECT_FALSE(mlp->layers[1].relu);
}

TEST(OnnxMlpTest, TorchExportNoOpsConstantsAndFloatDataAreAccepted) {
  TinyModel t;
  ModelBuilder b(2);
  b.Initializer("w0", {3, 2}, t.w0, /*raw=*/false);
  b.Initializer("b0", {3}, t.b0, /*raw=*/false);
  onnx::TensorProto* shape = b.graph()->add_initializer();
  shape->set_name("shape");
  shape->set_data_type(onnx::TensorProto::INT64);
  shape->add_dims(2);
  shape->add_int64_data(-1);
  shape->add_int64_data(2);
  b.Node("Flatten", "flatten", {"x"}, "f");
  b.Node("Reshape", "reshape", {"f", "shape"}, "rs");
  b.Node("Identity", "id_w", {"w0"}, "w0_alias");  // shared-weight alias
  b.Node("Gemm", "fc0", {"rs", "w0_alias", "b0"}, "h0");
  ModelBuilder::IntAttr(b.graph()->mutable_node(3), "transB", 1);
  b.Node("Relu", "relu0", {"h0"}, "r0");
  b.Node("Identity", "id", {"r0"}, "r0_id");
  // Second layer's weight and bias come from Constant nodes.
  onnx::NodeProto* c = b.Node("Constant", "c_w1", {}, "w1");
  onnx::AttributeProto* value = c->add_attribute();
  value->set_name("value");
  value->set_type(onnx::AttributeProto::TENSOR);
  value->mutable_t()->set_data_type(onnx::TensorProto::FLOAT);
  value->mutable_t()->add_dims(1);
  value->mutable_t()->add_dims(3);
  for (float v : t.w1) value->mutable_t()->add_float_data(v);
  onnx::NodeProto* cb = b.Node("Constant", "c_b1", {}, "b1");
  onnx::AttributeProto* bvalue = cb->add_attribute();
  bvalue->set_name("value");
  bvalue->set_type(onnx::AttributeProto::TENSOR);
  bvalue->mutable_t()->set_data_type(onnx::TensorProto::FLOAT);
  bvalue->mutable_t()->add_dims(1);
  bvalue->mutable_t()->add_float_data(t.b1[0]);
  b.Node("Gemm", "fc1", {"r0_id", "w1", "b1"}, "h1");
  ModelBuilder::IntAttr(b.graph()->mutable_node(8), "transB", 1);
  b.Node("Sigmoid", "sig", {"h1"}, "y");
  b.Output("y");
  absl::StatusOr<Mlp> mlp = ParseOnnxMlp(b.Bytes(), kName);
  ASSERT_TRUE(mlp.ok()) << mlp.status();
  ExpectBitEqual(mlp->layers[0].weight, t.w0);
  ExpectBitEqual(mlp->layers[1].weight, t.w1);
  ExpectBitEqual(mlp->layers[1].bias, t.b1);
}

// The TinyModel graph with Gemm(transB = 1); `edit` breaks it before serializing.
std::string TinyBytes(const std::function<void(ModelBuilder&, TinyModel&)>& edit_weights,
                      bool relu = true, bool sigmoid = true) {
  TinyModel t;
  ModelBuilder b(2);
  edit_weights(b, t);
  b.Initializer("w0", {3, 2}, t.w0);
  b.Initializer("b0", {3}, t.b0);
  b.Initializer("w1", {1, 3}, t.w1);
  b.Initializer("b1", {1}, t.b1);
  ModelBuilder::IntAttr(b.Node("Gemm", "fc0", {"x", "w0", "b0"}, "h0"), "transB", 1);
  std::string cur = "h0";
  if (relu) {
    b.Node("Relu", "relu0", {"h0"}, "r0");
    cur = "r0";
  }
  ModelBuilder::IntAttr(b.Node("Gemm", "fc1", {cur, "w1", "b1"}, "h1"), "transB", 1);
  if (sigmoid) {
    b.Node("Sigmoid", "sig", {"h1"}, "y");
    b.Output("y");
  } else {
    b.Output("h1");
  }
  return b.Bytes();
}

TEST(OnnxMlpTest, TinyBaselineIsAccepted) {
  absl::StatusOr<Mlp> mlp = ParseOnnxMlp(TinyBytes([](ModelBuilder&, TinyModel&) {}), kName);
  ASSERT_TRUE(mlp.ok()) << mlp.status();
  EXPECT_EQ(mlp->LayerSizes(), (std::vector<int>{2, 3, 1}));
}

TEST(OnnxMlpTest, MissingFinalSigmoidIsRefused) {
  ExpectError(ParseOnnxMlp(TinyBytes([](ModelBuilder&, TinyModel&) {}, true, false), kName),
              {"Sigmoid"});
}

TEST(OnnxMlpTest, MissingReluBetweenHiddenLayersIsRefused) {
  ExpectError(ParseOnnxMlp(TinyBytes([](ModelBuilder&, TinyModel&) {}, false, true), kName),
              {"node 1 'fc1' (Gemm)", "Relu"});
}

TEST(OnnxMlpTest, NaNWeightIsRefused) {
  ExpectError(ParseOnnxMlp(TinyBytes([](ModelBuilder&, TinyModel& t) { t.w1[2] = NAN; }), kName),
              {"node 2 'fc1' (Gemm)", "'w1'", "index 2", "nan"});
}

TEST(OnnxMlpTest, InfiniteBiasIsRefused) {
  ExpectError(
      ParseOnnxMlp(TinyBytes([](ModelBuilder&, TinyModel& t) { t.b0[0] = INFINITY; }), kName),
      {"node 0 'fc0' (Gemm)", "'b0'", "inf"});
}

TEST(OnnxMlpTest, Int64InitializerIsRefused) {
  ModelBuilder b(2);
  TinyModel t;
  onnx::TensorProto* w0 = b.graph()->add_initializer();
  w0->set_name("w0");
  w0->set_data_type(onnx::TensorProto::INT64);
  w0->add_dims(3);
  w0->add_dims(2);
  for (int i = 0; i < 6; ++i) w0->add_int64_data(i);
  b.Initializer("b0", {3}, t.b0);
  ModelBuilder::IntAttr(b.Node("Gemm", "fc0", {"x", "w0", "b0"}, "h0"), "transB", 1);
  b.Node("Sigmoid", "sig", {"h0"}, "y");
  b.Output("y");
  ExpectError(ParseOnnxMlp(b.Bytes(), kName), {"node 0 'fc0' (Gemm)", "'w0'", "INT64", "FLOAT"});
}

// The baseline TinyBytes model, edited as a ModelProto.
std::string MutateTiny(const std::function<void(onnx::ModelProto&)>& edit) {
  onnx::ModelProto m;
  EXPECT_TRUE(m.ParseFromString(TinyBytes([](ModelBuilder&, TinyModel&) {})));
  edit(m);
  return m.SerializeAsString();
}

onnx::TensorProto* FindInitializer(onnx::ModelProto& m, const std::string& name) {
  for (onnx::TensorProto& t : *m.mutable_graph()->mutable_initializer()) {
    if (t.name() == name) return &t;
  }
  ADD_FAILURE() << "no initializer " << name;
  return nullptr;
}

TEST(OnnxMlpTest, ExternalDataIsRefused) {
  const std::string bytes = MutateTiny([](onnx::ModelProto& m) {
    onnx::TensorProto* w = FindInitializer(m, "w0");
    w->clear_raw_data();
    w->set_data_location(onnx::TensorProto::EXTERNAL);
    onnx::StringStringEntryProto* loc = w->add_external_data();
    loc->set_key("location");
    loc->set_value("weights.bin");
  });
  ExpectError(ParseOnnxMlp(bytes, kName), {"node 0 'fc0' (Gemm)", "'w0'", "external data"});
}

TEST(OnnxMlpTest, ShapesThatDoNotChainAreRefused) {
  const std::string bytes = MutateTiny([](onnx::ModelProto& m) {
    // fc1 now takes 4 inputs, but fc0 gives 3.
    onnx::TensorProto* w = FindInitializer(m, "w1");
    w->set_dims(1, 4);
    const std::vector<float> v = {1, 2, 3, 4};
    w->set_raw_data(std::string(reinterpret_cast<const char*>(v.data()), 16));
  });
  ExpectError(ParseOnnxMlp(bytes, kName),
              {"node 2 'fc1' (Gemm)", "'w1'", "taking 4 inputs", "gives 3"});
}

TEST(OnnxMlpTest, BiasOfWrongWidthIsRefused) {
  const std::string bytes = MutateTiny([](onnx::ModelProto& m) {
    onnx::TensorProto* b = FindInitializer(m, "b0");
    b->set_dims(0, 2);
    b->set_raw_data(b->raw_data().substr(0, 8));
  });
  ExpectError(ParseOnnxMlp(bytes, kName), {"node 0 'fc0' (Gemm)", "'b0'", "[2]", "want [3]"});
}

TEST(OnnxMlpTest, GemmWithAlphaOtherThanOneIsRefused) {
  ModelBuilder b(2);
  TinyModel t;
  b.Initializer("w1", {1, 2}, {1.0f, 2.0f});
  b.Initializer("b1", {1}, t.b1);
  onnx::NodeProto* fc = b.Node("Gemm", "fc", {"x", "w1", "b1"}, "h");
  ModelBuilder::FloatAttr(fc, "alpha", 2.0f);
  ModelBuilder::IntAttr(fc, "transB", 1);
  b.Node("Sigmoid", "sig", {"h"}, "y");
  b.Output("y");
  ExpectError(ParseOnnxMlp(b.Bytes(), kName), {"node 0 'fc' (Gemm)", "alpha"});
}

TEST(OnnxMlpTest, GemmWithTransAIsRefused) {
  ModelBuilder b(2);
  b.Initializer("w1", {1, 2}, {1.0f, 2.0f});
  onnx::NodeProto* fc = b.Node("Gemm", "fc", {"x", "w1"}, "h");
  ModelBuilder::IntAttr(fc, "transA", 1);
  b.Node("Sigmoid", "sig", {"h"}, "y");
  b.Output("y");
  ExpectError(ParseOnnxMlp(b.Bytes(), kName), {"node 0 'fc' (Gemm)", "transA"});
}

TEST(OnnxMlpTest, SigmoidOutputMustBeTheGraphOutput) {
  ModelBuilder b(2);
  b.Initializer("w1", {1, 2}, {1.0f, 2.0f});
  ModelBuilder::IntAttr(b.Node("Gemm", "fc", {"x", "w1"}, "h"), "transB", 1);
  b.Node("Sigmoid", "sig", {"h"}, "y");
  b.Output("h");
  ExpectError(ParseOnnxMlp(b.Bytes(), kName), {"'y'", "output"});
}

TEST(OnnxMlpTest, BranchingGraphIsRefused) {
  ModelBuilder b(2);
  b.Initializer("w0", {2, 2}, {1, 0, 0, 1});
  b.Initializer("w1", {1, 2}, {1, 1});
  ModelBuilder::IntAttr(b.Node("Gemm", "fc0", {"x", "w0"}, "h0"), "transB", 1);
  b.Node("Relu", "relu0", {"h0"}, "r0");
  // Skips the hidden layer: consumes the input again instead of r0.
  ModelBuilder::IntAttr(b.Node("Gemm", "fc1", {"x", "w1"}, "h1"), "transB", 1);
  b.Node("Sigmoid", "sig", {"h1"}, "y");
  b.Output("y");
  ExpectError(ParseOnnxMlp(b.Bytes(), kName), {"node 2 'fc1' (Gemm)", "'x'", "'r0'"});
}

TEST(OnnxMlpTest, SecondDataInputIsRefused) {
  ModelBuilder b(2);
  onnx::ValueInfoProto* extra = b.graph()->add_input();
  extra->set_name("user_id");
  b.Initializer("w1", {1, 2}, {1, 1});
  ModelBuilder::IntAttr(b.Node("Gemm", "fc", {"x", "w1"}, "h"), "transB", 1);
  b.Node("Sigmoid", "sig", {"h"}, "y");
  b.Output("y");
  ExpectError(ParseOnnxMlp(b.Bytes(), kName), {"'user_id'", "inputs"});
}

TEST(OnnxMlpTest, ReshapeThatChangesWidthIsRefused) {
  ModelBuilder b(2);
  onnx::TensorProto* shape = b.graph()->add_initializer();
  shape->set_name("shape");
  shape->set_data_type(onnx::TensorProto::INT64);
  shape->add_dims(2);
  shape->add_int64_data(1);
  shape->add_int64_data(-1);
  b.Initializer("w1", {1, 2}, {1, 1});
  b.Node("Reshape", "rs", {"x", "shape"}, "r");
  ModelBuilder::IntAttr(b.Node("Gemm", "fc", {"r", "w1"}, "h"), "transB", 1);
  b.Node("Sigmoid", "sig", {"h"}, "y");
  b.Output("y");
  ExpectError(ParseOnnxMlp(b.Bytes(), kName), {"node 0 'rs' (Reshape)", "[1, -1]"});
}

TEST(OnnxMlpTest, RawDataOfWrongSizeIsRefused) {
  ExpectError(ParseOnnxMlp(TinyBytes([](ModelBuilder&, TinyModel& t) { t.b0.pop_back(); }), kName),
              {"node 0 'fc0' (Gemm)", "'b0'", "raw_data"});
}

TEST(OnnxMlpTest, FlattenThatMergesTheBatchIsRefused) {
  ModelBuilder b(2);
  b.Initializer("w1", {1, 2}, {1, 1});
  ModelBuilder::IntAttr(b.Node("Flatten", "flat", {"x"}, "f"), "axis", 0);
  ModelBuilder::IntAttr(b.Node("Gemm", "fc", {"f", "w1"}, "h"), "transB", 1);
  b.Node("Sigmoid", "sig", {"h"}, "y");
  b.Output("y");
  ExpectError(ParseOnnxMlp(b.Bytes(), kName), {"node 0 'flat' (Flatten)", "axis"});
}

TEST(OnnxMlpTest, AddThatIsNotAMatMulBiasIsRefused) {
  ModelBuilder b(2);
  b.Initializer("w1", {1, 2}, {1, 1});
  b.Initializer("shift", {2}, {0.5f, 0.5f});
  b.Node("Add", "shift_in", {"x", "shift"}, "xs");
  ModelBuilder::IntAttr(b.Node("Gemm", "fc", {"xs", "w1"}, "h"), "transB", 1);
  b.Node("Sigmoid", "sig", {"h"}, "y");
  b.Output("y");
  ExpectError(ParseOnnxMlp(b.Bytes(), kName), {"node 0 'shift_in' (Add)", "MatMul"});
}

}  // namespace
}  // namespace recserve
