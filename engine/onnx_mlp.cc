#include "engine/onnx_mlp.h"

#include <onnx/onnx_pb.h>

#include <climits>
#include <cmath>
#include <cstring>
#include <exception>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "engine/file_util.h"
#include "engine/status_macros.h"

// raw_data is little-endian by the ONNX spec; it is memcpy'd to and from host floats.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "onnx_mlp.cc assumes a little-endian host");

namespace recserve {
namespace {

constexpr char kSupportedOps[] = "recserve reads MLPs of Gemm/MatMul+Add, Relu and a final Sigmoid";

std::string DataTypeName(int32_t type) {
  if (onnx::TensorProto_DataType_IsValid(type)) {
    return onnx::TensorProto_DataType_Name(static_cast<onnx::TensorProto_DataType>(type));
  }
  return absl::StrCat("type ", type);
}

std::string DimsString(const std::vector<int64_t>& dims) {
  return absl::StrCat("[", absl::StrJoin(dims, ", "), "]");
}

struct FloatTensor {
  std::vector<int64_t> dims;
  std::vector<float> values;
};

// Checks dims and returns the element count, overflow-safe.
absl::StatusOr<uint64_t> ElementCount(const onnx::TensorProto& t, const std::string& what) {
  uint64_t count = 1;
  for (int64_t d : t.dims()) {
    if (d < 0) {
      return absl::InvalidArgumentError(absl::StrFormat("%s has negative dimension %d", what, d));
    }
    if (__builtin_mul_overflow(count, static_cast<uint64_t>(d), &count)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: element count of its dims overflows", what));
    }
  }
  return count;
}

absl::Status CheckStoredInline(const onnx::TensorProto& t, const std::string& what) {
  if (t.data_location() == onnx::TensorProto::EXTERNAL || t.external_data_size() > 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(what,
                     " uses external data, which recserve does not read; save the model with "
                     "all tensors inside the .onnx file"));
  }
  if (t.has_segment()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " is segmented; not supported"));
  }
  return absl::OkStatus();
}

// Decodes a FLOAT tensor held in raw_data (little-endian) or float_data; every value
// must be finite.
absl::StatusOr<FloatTensor> DecodeFloat(const onnx::TensorProto& t, const std::string& what) {
  RETURN_IF_ERROR(CheckStoredInline(t, what));
  if (t.data_type() != onnx::TensorProto::FLOAT) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s has data type %s, want FLOAT", what, DataTypeName(t.data_type())));
  }
  ASSIGN_OR_RETURN(const uint64_t count, ElementCount(t, what));
  FloatTensor out;
  out.dims.assign(t.dims().begin(), t.dims().end());
  if (t.has_raw_data() && t.float_data_size() > 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, " has both raw_data and float_data"));
  }
  if (t.has_raw_data()) {
    // Dividing avoids overflowing count * 4; the size check comes before any allocation.
    if (t.raw_data().size() % sizeof(float) != 0 || t.raw_data().size() / sizeof(float) != count) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: raw_data has %d bytes but dims %s need %d floats", what,
                          t.raw_data().size(), DimsString(out.dims), count));
    }
    out.values.resize(count);
    if (count > 0) std::memcpy(out.values.data(), t.raw_data().data(), t.raw_data().size());
  } else {
    if (static_cast<uint64_t>(t.float_data_size()) != count) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: float_data has %d values but dims %s need %d", what,
                          t.float_data_size(), DimsString(out.dims), count));
    }
    out.values.assign(t.float_data().begin(), t.float_data().end());
  }
  for (size_t i = 0; i < out.values.size(); ++i) {
    if (!std::isfinite(out.values[i])) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: value at index %d is %f, want finite", what, i, out.values[i]));
    }
  }
  return out;
}

// Decodes an INT64 tensor (Reshape's shape input).
absl::StatusOr<std::vector<int64_t>> DecodeInt64(const onnx::TensorProto& t,
                                                 const std::string& what) {
  RETURN_IF_ERROR(CheckStoredInline(t, what));
  if (t.data_type() != onnx::TensorProto::INT64) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s has data type %s, want INT64", what, DataTypeName(t.data_type())));
  }
  ASSIGN_OR_RETURN(const uint64_t count, ElementCount(t, what));
  std::vector<int64_t> out;
  if (t.has_raw_data()) {
    if (t.raw_data().size() % sizeof(int64_t) != 0 ||
        t.raw_data().size() / sizeof(int64_t) != count) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: raw_data has %d bytes but needs %d int64 values", what, t.raw_data().size(), count));
    }
    out.resize(count);
    if (count > 0) std::memcpy(out.data(), t.raw_data().data(), t.raw_data().size());
  } else {
    if (static_cast<uint64_t>(t.int64_data_size()) != count) {
      return absl::InvalidArgumentError(absl::StrFormat("%s: int64_data has %d values but needs %d",
                                                        what, t.int64_data_size(), count));
    }
    out.assign(t.int64_data().begin(), t.int64_data().end());
  }
  return out;
}

// Gemm with transB = 0 and MatMul hold weights [in x out]; DenseLayer wants [out x in].
std::vector<float> InByOutToOutByIn(const std::vector<float>& w, int in, int out) {
  std::vector<float> t(w.size());
  for (int i = 0; i < in; ++i) {
    for (int o = 0; o < out; ++o) {
      t[static_cast<size_t>(o) * in + i] = w[static_cast<size_t>(i) * out + o];
    }
  }
  return t;
}

// Walks the graph once, in node order (ONNX requires topological order), as a small
// state machine over the activation chain input -> layer (-> Relu -> layer)* -> Sigmoid.
class GraphReader {
 public:
  GraphReader(const onnx::GraphProto& graph, const std::string& name)
      : graph_(graph), name_(name) {}

  absl::StatusOr<Mlp> Read();

 private:
  enum class Stage {
    kExpectLayer,  // at the input or after a Relu
    kAwaitAdd,     // after a MatMul, before its bias Add
    kAfterLayer,   // a layer is complete: Relu, Sigmoid (or an error) comes next
    kDone,         // after the Sigmoid
  };

  absl::Status Error(const std::string& msg) const {
    return absl::InvalidArgumentError(absl::StrCat(name_, ": ", msg));
  }
  absl::Status NodeError(int index, const onnx::NodeProto& node, const std::string& msg) const {
    return absl::InvalidArgumentError(absl::StrFormat("%s: node %d '%s' (%s): %s", name_, index,
                                                      node.name(), node.op_type(), msg));
  }

  absl::Status ReadInput();
  absl::Status VisitNode(int index, const onnx::NodeProto& node);
  absl::Status CheckAttributes(int index, const onnx::NodeProto& node,
                               const std::set<std::string>& allowed) const;
  absl::StatusOr<FloatTensor> FloatConstant(const std::string& value) const;
  absl::Status CheckOutput() const;
  // Turns a bias of [N] or [1, N] into `layer.bias`.
  absl::Status SetBias(int index, const onnx::NodeProto& node, const std::string& value,
                       DenseLayer& layer) const;
  absl::Status StartLayer(int index, const onnx::NodeProto& node);

  const onnx::GraphProto& graph_;
  const std::string& name_;
  std::map<std::string, const onnx::TensorProto*> constants_;  // initializers, Constants
  std::set<std::string> defined_;                              // every value name produced so far
  std::string cur_;     // the activation tensor the next layer must consume
  int64_t width_ = -1;  // its feature width; -1 while not known
  Stage stage_ = Stage::kExpectLayer;
  DenseLayer pending_;  // MatMul seen, waiting for its Add
  std::string sigmoid_output_;
  Mlp mlp_;
};

absl::StatusOr<FloatTensor> GraphReader::FloatConstant(const std::string& value) const {
  auto it = constants_.find(value);
  if (it == constants_.end()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "'%s' is not an initializer or Constant output; weights must be constants", value));
  }
  return DecodeFloat(*it->second, absl::StrFormat("initializer '%s'", value));
}

absl::Status GraphReader::CheckAttributes(int index, const onnx::NodeProto& node,
                                          const std::set<std::string>& allowed) const {
  std::set<std::string> seen;
  for (const onnx::AttributeProto& a : node.attribute()) {
    if (allowed.count(a.name()) == 0) {
      return NodeError(index, node, absl::StrFormat("unexpected attribute '%s'", a.name()));
    }
    if (!seen.insert(a.name()).second) {
      return NodeError(index, node, absl::StrFormat("attribute '%s' given twice", a.name()));
    }
  }
  return absl::OkStatus();
}

absl::Status GraphReader::ReadInput() {
  for (const onnx::TensorProto& init : graph_.initializer()) {
    if (init.name().empty()) return Error("an initializer has no name");
    if (!constants_.emplace(init.name(), &init).second) {
      return Error(absl::StrFormat("initializer '%s' is defined twice", init.name()));
    }
    defined_.insert(init.name());
  }
  // Older exporters list initializers among the inputs too; those are not features.
  std::vector<const onnx::ValueInfoProto*> inputs;
  std::vector<std::string> input_names;
  for (const onnx::ValueInfoProto& in : graph_.input()) {
    if (constants_.count(in.name()) == 0) {
      inputs.push_back(&in);
      input_names.push_back(absl::StrCat("'", in.name(), "'"));
    }
  }
  if (inputs.size() != 1) {
    return Error(absl::StrFormat(
        "graph has %d non-initializer inputs (%s); want exactly one, the features [batch, K]",
        inputs.size(), absl::StrJoin(input_names, ", ")));
  }
  const onnx::ValueInfoProto& input = *inputs.front();
  const std::string where = absl::StrFormat("input '%s'", input.name());
  if (input.name().empty()) return Error("the graph input has no name");
  if (!input.type().has_tensor_type()) return Error(where + " is not a tensor");
  const onnx::TypeProto_Tensor& tt = input.type().tensor_type();
  if (tt.elem_type() != onnx::TensorProto::FLOAT) {
    return Error(
        absl::StrFormat("%s has element type %s, want FLOAT", where, DataTypeName(tt.elem_type())));
  }
  if (tt.has_shape()) {
    if (tt.shape().dim_size() != 2) {
      return Error(
          absl::StrFormat("%s has rank %d, want 2 ([batch, K])", where, tt.shape().dim_size()));
    }
    const onnx::TensorShapeProto_Dimension& k = tt.shape().dim(1);
    if (k.has_dim_value()) {
      if (k.dim_value() <= 0 || k.dim_value() > INT_MAX) {
        return Error(absl::StrFormat("%s has feature dimension %d", where, k.dim_value()));
      }
      width_ = k.dim_value();
    }
  }
  cur_ = input.name();
  defined_.insert(cur_);
  return absl::OkStatus();
}

absl::Status GraphReader::SetBias(int index, const onnx::NodeProto& node, const std::string& value,
                                  DenseLayer& layer) const {
  absl::StatusOr<FloatTensor> bias = FloatConstant(value);
  if (!bias.ok()) return NodeError(index, node, absl::StrCat("bias: ", bias.status().message()));
  const std::vector<int64_t>& d = bias->dims;
  const bool ok =
      (d.size() == 1 && d[0] == layer.out) || (d.size() == 2 && d[0] == 1 && d[1] == layer.out);
  if (!ok) {
    return NodeError(index, node,
                     absl::StrFormat("bias '%s' has shape %s, want [%d] or [1, %d]", value,
                                     DimsString(d), layer.out, layer.out));
  }
  layer.bias = std::move(bias->values);
  return absl::OkStatus();
}

// Gemm and MatMul both start a layer; the previous layer must be closed by a Relu.
absl::Status GraphReader::StartLayer(int index, const onnx::NodeProto& node) {
  switch (stage_) {
    case Stage::kExpectLayer:
      return absl::OkStatus();
    case Stage::kAfterLayer:
      return NodeError(index, node,
                       absl::StrFormat("layer %d feeds this layer without a Relu; hidden "
                                       "layers need a Relu",
                                       mlp_.layers.size() - 1));
    case Stage::kAwaitAdd:
      return NodeError(index, node, "the preceding MatMul has no bias Add");
    case Stage::kDone:
      break;
  }
  return NodeError(index, node, "comes after the final Sigmoid");
}

absl::Status GraphReader::VisitNode(int index, const onnx::NodeProto& node) {
  const std::string& op = node.op_type();
  static const std::set<std::string>* const kOps = new std::set<std::string>{
      "Gemm", "MatMul", "Add", "Relu", "Sigmoid", "Identity", "Flatten", "Reshape", "Constant"};
  if ((!node.domain().empty() && node.domain() != "ai.onnx") || kOps->count(op) == 0) {
    return NodeError(index, node, absl::StrCat("unsupported op; ", kSupportedOps));
  }
  if (node.output_size() != 1 || node.output(0).empty()) {
    return NodeError(index, node, absl::StrFormat("has %d outputs, want 1", node.output_size()));
  }
  const std::string& output = node.output(0);
  if (!defined_.insert(output).second) {
    return NodeError(index, node, absl::StrFormat("output '%s' is already defined", output));
  }

  if (op == "Constant") {
    RETURN_IF_ERROR(CheckAttributes(index, node, {"value"}));
    if (node.attribute_size() != 1 || node.attribute(0).type() != onnx::AttributeProto::TENSOR) {
      return NodeError(index, node, "only a Constant with a 'value' tensor is supported");
    }
    constants_[output] = &node.attribute(0).t();
    return absl::OkStatus();
  }
  // torch.onnx.export aliases shared weights through Identity.
  if (op == "Identity" && node.input_size() == 1 && constants_.count(node.input(0)) > 0) {
    RETURN_IF_ERROR(CheckAttributes(index, node, {}));
    constants_[output] = constants_[node.input(0)];
    return absl::OkStatus();
  }
  if (stage_ == Stage::kDone) {
    return NodeError(index, node,
                     "comes after the final Sigmoid, whose output must be the graph output");
  }

  // Every other node transforms the activation chain.
  int min_inputs = 1;
  int max_inputs = 1;
  if (op == "Gemm") {
    min_inputs = 2;
    max_inputs = 3;  // C (the bias) is optional
  } else if (op == "MatMul" || op == "Add" || op == "Reshape") {
    min_inputs = max_inputs = 2;
  }
  if (node.input_size() < min_inputs || node.input_size() > max_inputs) {
    return NodeError(
        index, node,
        absl::StrFormat("has %d inputs, want %s", node.input_size(),
                        min_inputs == max_inputs ? absl::StrCat(min_inputs)
                                                 : absl::StrCat(min_inputs, " or ", max_inputs)));
  }
  const bool add_bias_first = op == "Add" && node.input(1) == cur_;
  const std::string& data_input = add_bias_first ? node.input(1) : node.input(0);
  if (data_input != cur_) {
    return NodeError(index, node,
                     absl::StrFormat("takes '%s' but the activation at this point is '%s'; "
                                     "recserve reads a single chain of layers",
                                     node.input(0), cur_));
  }

  if (op == "Gemm") {
    RETURN_IF_ERROR(CheckAttributes(index, node, {"alpha", "beta", "transA", "transB"}));
    RETURN_IF_ERROR(StartLayer(index, node));
    int64_t trans_b = 0;
    for (const onnx::AttributeProto& a : node.attribute()) {
      const bool is_float = a.name() == "alpha" || a.name() == "beta";
      const auto want_type = is_float ? onnx::AttributeProto::FLOAT : onnx::AttributeProto::INT;
      if (a.type() != want_type) {
        return NodeError(index, node,
                         absl::StrFormat("attribute '%s' has the wrong type", a.name()));
      }
      if (is_float && a.f() != 1.0f) {
        return NodeError(index, node, absl::StrFormat("%s = %g, want 1", a.name(), a.f()));
      }
      if (a.name() == "transA" && a.i() != 0) {
        return NodeError(index, node, absl::StrFormat("transA = %d, want 0", a.i()));
      }
      if (a.name() == "transB") {
        if (a.i() != 0 && a.i() != 1) {
          return NodeError(index, node, absl::StrFormat("transB = %d, want 0 or 1", a.i()));
        }
        trans_b = a.i();
      }
    }
    absl::StatusOr<FloatTensor> w = FloatConstant(node.input(1));
    if (!w.ok()) return NodeError(index, node, absl::StrCat("B: ", w.status().message()));
    if (w->dims.size() != 2 || w->dims[0] <= 0 || w->dims[1] <= 0 || w->dims[0] > INT_MAX ||
        w->dims[1] > INT_MAX) {
      return NodeError(index, node,
                       absl::StrFormat("weight '%s' has shape %s, want 2-D with positive sizes",
                                       node.input(1), DimsString(w->dims)));
    }
    DenseLayer layer;
    layer.in = static_cast<int>(trans_b ? w->dims[1] : w->dims[0]);
    layer.out = static_cast<int>(trans_b ? w->dims[0] : w->dims[1]);
    if (width_ >= 0 && layer.in != width_) {
      return NodeError(
          index, node,
          absl::StrFormat("weight '%s' is %s (transB = %d), taking %d inputs, but "
                          "the previous layer gives %d",
                          node.input(1), DimsString(w->dims), trans_b, layer.in, width_));
    }
    if (trans_b) {
      layer.weight = std::move(w->values);
    } else {
      layer.weight = InByOutToOutByIn(w->values, layer.in, layer.out);
    }
    if (node.input_size() == 3 && !node.input(2).empty()) {
      RETURN_IF_ERROR(SetBias(index, node, node.input(2), layer));
    } else {
      layer.bias.assign(layer.out, 0.0f);  // nn.Linear(bias=False)
    }
    mlp_.layers.push_back(std::move(layer));
    width_ = mlp_.layers.back().out;
    stage_ = Stage::kAfterLayer;
  } else if (op == "MatMul") {
    RETURN_IF_ERROR(CheckAttributes(index, node, {}));
    RETURN_IF_ERROR(StartLayer(index, node));
    absl::StatusOr<FloatTensor> w = FloatConstant(node.input(1));
    if (!w.ok()) return NodeError(index, node, absl::StrCat("B: ", w.status().message()));
    if (w->dims.size() != 2 || w->dims[0] <= 0 || w->dims[1] <= 0 || w->dims[0] > INT_MAX ||
        w->dims[1] > INT_MAX) {
      return NodeError(index, node,
                       absl::StrFormat("weight '%s' has shape %s, want 2-D with positive sizes",
                                       node.input(1), DimsString(w->dims)));
    }
    pending_ = DenseLayer();
    pending_.in = static_cast<int>(w->dims[0]);
    pending_.out = static_cast<int>(w->dims[1]);
    if (width_ >= 0 && pending_.in != width_) {
      return NodeError(index, node,
                       absl::StrFormat("weight '%s' is %s, taking %d inputs, but the previous "
                                       "layer gives %d",
                                       node.input(1), DimsString(w->dims), pending_.in, width_));
    }
    pending_.weight = InByOutToOutByIn(w->values, pending_.in, pending_.out);
    width_ = pending_.out;
    stage_ = Stage::kAwaitAdd;
  } else if (op == "Add") {
    RETURN_IF_ERROR(CheckAttributes(index, node, {}));
    if (stage_ != Stage::kAwaitAdd) {
      return NodeError(index, node, "Add is only accepted as the bias right after a MatMul");
    }
    RETURN_IF_ERROR(SetBias(index, node, add_bias_first ? node.input(0) : node.input(1), pending_));
    mlp_.layers.push_back(std::move(pending_));
    pending_ = DenseLayer();
    stage_ = Stage::kAfterLayer;
  } else if (op == "Relu") {
    RETURN_IF_ERROR(CheckAttributes(index, node, {}));
    if (stage_ != Stage::kAfterLayer) {
      return NodeError(index, node, "Relu must directly follow a Gemm or MatMul+Add layer");
    }
    mlp_.layers.back().relu = true;
    stage_ = Stage::kExpectLayer;
  } else if (op == "Sigmoid") {
    RETURN_IF_ERROR(CheckAttributes(index, node, {}));
    if (stage_ != Stage::kAfterLayer) {
      return NodeError(index, node,
                       "Sigmoid must directly follow the last Gemm or MatMul+Add layer");
    }
    sigmoid_output_ = output;
    stage_ = Stage::kDone;
  } else if (op == "Identity") {
    RETURN_IF_ERROR(CheckAttributes(index, node, {}));
  } else if (op == "Flatten") {
    RETURN_IF_ERROR(CheckAttributes(index, node, {"axis"}));
    for (const onnx::AttributeProto& a : node.attribute()) {
      // On a rank-2 tensor only axis 1 (= -1) keeps [batch, K].
      if (a.type() != onnx::AttributeProto::INT || (a.i() != 1 && a.i() != -1)) {
        return NodeError(index, node, "only axis = 1, which keeps [batch, K], is supported");
      }
    }
  } else if (op == "Reshape") {
    RETURN_IF_ERROR(CheckAttributes(index, node, {"allowzero"}));
    bool allow_zero = false;
    for (const onnx::AttributeProto& a : node.attribute()) {
      if (a.type() != onnx::AttributeProto::INT) {
        return NodeError(index, node, "attribute 'allowzero' has the wrong type");
      }
      allow_zero = a.i() != 0;
    }
    auto it = constants_.find(node.input(1));
    if (it == constants_.end()) {
      return NodeError(
          index, node,
          absl::StrFormat("shape '%s' is not an initializer or Constant output", node.input(1)));
    }
    absl::StatusOr<std::vector<int64_t>> shape =
        DecodeInt64(*it->second, absl::StrFormat("shape '%s'", node.input(1)));
    if (!shape.ok()) return NodeError(index, node, std::string(shape.status().message()));
    // [-1, K], [0, K] or [0, -1] keep [batch, K]; 0 copies the input dimension unless
    // allowzero is set.
    const std::vector<int64_t>& s = *shape;
    const bool batch_kept = s.size() == 2 && (s[0] == -1 || (s[0] == 0 && !allow_zero));
    const bool width_kept = s.size() == 2 && ((width_ > 0 && s[1] == width_) ||
                                              (s[1] == -1 && s[0] == 0 && !allow_zero));
    if (!batch_kept || !width_kept) {
      return NodeError(
          index, node,
          absl::StrFormat("shape %s does not keep [batch, %d]", DimsString(s), width_));
    }
  }
  cur_ = output;
  return absl::OkStatus();
}

absl::Status GraphReader::CheckOutput() const {
  if (graph_.output_size() != 1 || graph_.output(0).name() != sigmoid_output_) {
    std::vector<std::string> names;
    for (const onnx::ValueInfoProto& o : graph_.output()) names.push_back(o.name());
    return Error(absl::StrFormat("graph outputs are [%s]; want exactly the Sigmoid output '%s'",
                                 absl::StrJoin(names, ", "), sigmoid_output_));
  }
  const onnx::TypeProto& type = graph_.output(0).type();
  if (type.has_tensor_type()) {
    const onnx::TypeProto_Tensor& tt = type.tensor_type();
    if (tt.elem_type() != onnx::TensorProto::UNDEFINED &&
        tt.elem_type() != onnx::TensorProto::FLOAT) {
      return Error(absl::StrFormat("output '%s' has element type %s, want FLOAT", sigmoid_output_,
                                   DataTypeName(tt.elem_type())));
    }
    if (tt.has_shape() && (tt.shape().dim_size() != 2 || (tt.shape().dim(1).has_dim_value() &&
                                                          tt.shape().dim(1).dim_value() != 1))) {
      return Error(absl::StrFormat("output '%s' is not [batch, 1]", sigmoid_output_));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Mlp> GraphReader::Read() {
  RETURN_IF_ERROR(ReadInput());
  for (int i = 0; i < graph_.node_size(); ++i) RETURN_IF_ERROR(VisitNode(i, graph_.node(i)));
  if (stage_ != Stage::kDone) {
    if (mlp_.layers.empty() && stage_ != Stage::kAwaitAdd) {
      return Error("graph has no Gemm or MatMul layer");
    }
    return Error(absl::StrFormat("graph does not end in a Sigmoid (last value '%s'); %s", cur_,
                                 kSupportedOps));
  }
  RETURN_IF_ERROR(CheckOutput());
  absl::Status valid = ValidateMlp(mlp_);
  if (!valid.ok()) return Error(std::string(valid.message()));
  return std::move(mlp_);
}

absl::StatusOr<Mlp> ParseOnnxMlpOrThrow(const std::string& bytes, const std::string& name) {
  onnx::ModelProto model;
  if (!model.ParseFromString(bytes)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: not an ONNX model (%d bytes do not parse as a ModelProto)", name, bytes.size()));
  }
  if (!model.has_graph()) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": ONNX model has no graph"));
  }
  return GraphReader(model.graph(), name).Read();
}

void SetTensorType(onnx::ValueInfoProto* v, const std::string& name, int64_t width) {
  v->set_name(name);
  onnx::TypeProto_Tensor* tt = v->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(onnx::TensorProto::FLOAT);
  tt->mutable_shape()->add_dim()->set_dim_param("batch");
  tt->mutable_shape()->add_dim()->set_dim_value(width);
}

void AddFloatInitializer(onnx::GraphProto* g, const std::string& name, std::vector<int64_t> dims,
                         const std::vector<float>& values) {
  onnx::TensorProto* t = g->add_initializer();
  t->set_name(name);
  t->set_data_type(onnx::TensorProto::FLOAT);
  for (int64_t d : dims) t->add_dims(d);
  t->set_raw_data(
      std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float)));
}

}  // namespace

absl::StatusOr<Mlp> ParseOnnxMlp(const std::string& bytes, const std::string& name) {
  if (bytes.size() > static_cast<size_t>(INT_MAX)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: %d bytes; protobuf cannot parse a model of 2 GiB or more", name, bytes.size()));
  }
  // Protobuf reports errors by return value, but allocation can still throw.
  try {
    return ParseOnnxMlpOrThrow(bytes, name);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": cannot read model: ", e.what()));
  }
}

absl::StatusOr<Mlp> ReadOnnxMlp(const std::string& path) {
  // Protobuf cannot parse messages of 2 GiB or more.
  ASSIGN_OR_RETURN(const std::string bytes, ReadFileToString(path, INT_MAX));
  return ParseOnnxMlp(bytes, path);
}

absl::StatusOr<std::string> SerializeOnnxMlp(const Mlp& mlp) {
  RETURN_IF_ERROR(ValidateMlp(mlp));
  onnx::ModelProto model;
  model.set_ir_version(8);
  model.set_producer_name("recserve");
  onnx::OperatorSetIdProto* opset = model.add_opset_import();
  opset->set_domain("");
  opset->set_version(13);
  onnx::GraphProto* g = model.mutable_graph();
  g->set_name("recserve_mlp");
  SetTensorType(g->add_input(), "features", mlp.input_dim());

  std::string cur = "features";
  for (size_t i = 0; i < mlp.layers.size(); ++i) {
    const DenseLayer& l = mlp.layers[i];
    const std::string weight = absl::StrFormat("layers.%d.weight", i);
    const std::string bias = absl::StrFormat("layers.%d.bias", i);
    AddFloatInitializer(g, weight, {l.out, l.in}, l.weight);
    AddFloatInitializer(g, bias, {l.out}, l.bias);

    onnx::NodeProto* gemm = g->add_node();
    gemm->set_name(absl::StrFormat("gemm_%d", i));
    gemm->set_op_type("Gemm");
    gemm->add_input(cur);
    gemm->add_input(weight);
    gemm->add_input(bias);
    cur = absl::StrFormat("gemm_%d_out", i);
    gemm->add_output(cur);
    for (const char* attr : {"alpha", "beta"}) {
      onnx::AttributeProto* a = gemm->add_attribute();
      a->set_name(attr);
      a->set_type(onnx::AttributeProto::FLOAT);
      a->set_f(1.0f);
    }
    onnx::AttributeProto* trans_b = gemm->add_attribute();
    trans_b->set_name("transB");
    trans_b->set_type(onnx::AttributeProto::INT);
    trans_b->set_i(1);

    if (l.relu) {
      onnx::NodeProto* relu = g->add_node();
      relu->set_name(absl::StrFormat("relu_%d", i));
      relu->set_op_type("Relu");
      relu->add_input(cur);
      cur = absl::StrFormat("relu_%d_out", i);
      relu->add_output(cur);
    }
  }
  onnx::NodeProto* sigmoid = g->add_node();
  sigmoid->set_name("sigmoid");
  sigmoid->set_op_type("Sigmoid");
  sigmoid->add_input(cur);
  sigmoid->add_output("score");
  SetTensorType(g->add_output(), "score", 1);

  std::string out;
  if (!model.SerializeToString(&out)) {
    return absl::InternalError("SerializeOnnxMlp: protobuf serialization failed");
  }
  return out;
}

absl::Status WriteOnnxMlp(const Mlp& mlp, const std::string& path) {
  ASSIGN_OR_RETURN(const std::string bytes, SerializeOnnxMlp(mlp));
  return WriteFileAtomically(path, bytes);
}

}  // namespace recserve
