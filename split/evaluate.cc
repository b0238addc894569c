#include "split/evaluate.h"

#include <torch/torch.h>

#include "split/split_step.h"

namespace splitfed {

void ScoreBatch(const torch::Tensor& predictions, const torch::Tensor& masks,
                ScoreAccumulator& scores) {
  TORCH_CHECK(predictions.sizes() == masks.sizes(), "predictions ", predictions.sizes(),
              " and masks ", masks.sizes(), " differ");
  const torch::Tensor p = predictions.to(torch::kLong).contiguous();
  const torch::Tensor g = masks.to(torch::kLong).contiguous();
  const int64_t h = p.size(1), w = p.size(2);
  for (int64_t i = 0; i < p.size(0); ++i) {
    const LabelView pred{p.data_ptr<int64_t>() + i * h * w, h, w};
    const LabelView truth{g.data_ptr<int64_t>() + i * h * w, h, w};
    scores.Add(ScoreImage(pred, truth, static_cast<int64_t>(scores.num_classes())));
  }
}

ScoreAccumulator EvaluateSplitModel(SplitModel& model, const SegmentationSet& set,
                                    int64_t batch_size) {
  const bool was_training = model.front->is_training();
  model.front->eval();
  model.body->eval();
  model.back->eval();
  ScoreAccumulator scores(set.num_classes);
  for (int64_t start = 0; start < set.size(); start += batch_size) {
    const int64_t end = std::min(start + batch_size, set.size());
    const torch::Tensor logits = SplitInference(model, set.images.slice(0, start, end));
    ScoreBatch(logits.argmax(1), set.masks.slice(0, start, end), scores);
  }
  model.front->train(was_training);
  model.body->train(was_training);
  model.back->train(was_training);
  return scores;
}

}  // namespace splitfed
