// Scoring a model on a labelled set: argmax predictions against the masks.
#pragma once

#include "datasets/segmentation_set.h"
#include "metrics/segmentation_metrics.h"
#include "split/unet.h"

namespace splitfed {

// Runs front, body and back in eval mode (BatchNorm uses running statistics) and scores
// every image; restores each part's training mode afterwards.
ScoreAccumulator EvaluateSplitModel(SplitModel& model, const SegmentationSet& set,
                                    int64_t batch_size = 16);

// Scores predicted label maps (N×H×W int64) against masks of the same shape.
void ScoreBatch(const torch::Tensor& predictions, const torch::Tensor& masks,
                ScoreAccumulator& scores);

}  // namespace splitfed
