"""Peaks in the graph: append 3x3 max-pool NMS and top-k to an exported rtpose model.

The model then outputs, per image, its best ``T`` peaks per keypoint type
with the offset channels read at each peak's cell and its refinement voted
by the cells around it (:func:`vote_at_peaks`), so the
runtime decoder never touches the dense maps and its work no longer grows
with the map size. Names and shapes are in :class:`rtpose.model_meta.ModelMeta`;
the metadata in the file records them (``output_names``, ``peak_top_k``).

Peaks are the cells equal to their 3x3 max-pool (``MaxPool`` + ``Equal``)
and strictly above their earlier neighbours (the row above and the cell to
the left), which is how :func:`rtpose.decoder.find_peaks` breaks ties on a
flat top; max-pool alone would keep both cells of a plateau. ``TopK`` breaks
ties between equal scores by the lower cell index, as find_peaks' top-k does.
The heatmap threshold stays a runtime knob: the graph keeps the best ``T``
peaks whatever their score, with -1 (below any sigmoid output, so below any
threshold) in slots where the map has fewer peaks.

Needs onnx and onnxruntime only, no torch: peaks can be added to any
exported rtpose model file.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export.formats import ExportError
from export.onnx_file import load_onnx, read_onnx_meta, rewrite_onnx, write_onnx_meta
from rtpose.decoder import REFINEMENT_LIMIT, VOTE_FLOOR, VOTE_RADIUS, VOTE_STEPS
from rtpose.fast_decoder import PEAK_OUTPUTS
from rtpose.model_meta import ModelMeta

DENSE_OUTPUTS = ("heatmaps", "offsets", "refinements")
NO_PEAK = -1.0   # score in a top-k slot the map has no peak for
MOVE_TOLERANCE = 1e-4   # map pixels the graph's refinement votes may differ from numpy's (summed in another order)


def add_peak_outputs(model: onnx.ModelProto, top_k: int, keep_dense: bool = False,
                     source: str | Path = "model") -> onnx.ModelProto:
    """A copy of ``model`` that also outputs its top ``top_k`` peaks per keypoint type.

    The dense maps stay outputs only with ``keep_dense`` (for checks and
    visualisation); the runtime needs the peak outputs alone.
    """
    meta = read_onnx_meta(model, source)
    if meta.peak_top_k:
        raise ExportError(f"{source} outputs peaks already (top {meta.peak_top_k}); add peaks to a dense model")
    if tuple(meta.output_names) != DENSE_OUTPUTS:
        raise ExportError(f"{source}: peaks need the outputs {list(DENSE_OUTPUTS)}, "
                          f"the model has {list(meta.output_names)}")
    cells = meta.map_width * meta.map_height
    if not 1 <= top_k <= cells:
        raise ExportError(f"--peak-top-k must be in 1..{cells} (cells in the {meta.map_width}x{meta.map_height} map)")
    skeleton = meta.skeleton
    sources = [a for a, _ in skeleton.directed_limbs]   # keypoint type each directed limb starts at

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    heatmaps, offsets, refinements = DENSE_OUTPUTS

    def const(name: str, value) -> str:
        graph.initializer.append(numpy_helper.from_array(np.asarray(value), f"peaks/{name}"))
        return f"peaks/{name}"

    def node(op: str, inputs: list[str], output: str, **attrs) -> str:
        graph.node.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    # 3x3 non-maximum suppression, with find_peaks' tie rule.
    pooled = node("MaxPool", [heatmaps], "peaks/pooled", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    is_max = node("Equal", [heatmaps, pooled], "peaks/is_max")
    # Pad top, left and right with -inf; the four slices are each cell's
    # upper-left, upper, upper-right and left neighbour.
    padded = node("Pad", [heatmaps, const("pads", np.array([0, 0, 1, 1, 0, 0, 0, 1], np.int64)),
                          const("minus_inf", np.array(-np.inf, np.float32))], "peaks/padded")
    end = np.iinfo(np.int64).max
    windows = {"upper_left": ([0, 0], [-1, -2]), "upper": ([0, 1], [-1, -1]),
               "upper_right": ([0, 2], [-1, end]), "left": ([1, 0], [end, -2])}
    hw_axes = const("hw_axes", np.array([2, 3], np.int64))
    earlier = [node("Slice", [padded, const(f"{n}_starts", np.array(s, np.int64)),
                              const(f"{n}_ends", np.array(e, np.int64)), hw_axes], f"peaks/{n}")
               for n, (s, e) in windows.items()]
    earlier_max = node("Max", earlier, "peaks/earlier_max")
    beats_earlier = node("Greater", [heatmaps, earlier_max], "peaks/beats_earlier")
    is_peak = node("And", [is_max, beats_earlier], "peaks/is_peak")
    masked = node("Where", [is_peak, heatmaps, const("no_peak", np.array(NO_PEAK, np.float32))], "peaks/masked")
    flat = node("Reshape", [masked, const("flat_shape", np.array([0, 0, -1], np.int64))], "peaks/flat")
    scores, cells_out = PEAK_OUTPUTS[:2]
    graph.node.append(helper.make_node("TopK", [flat, const("k", np.array([top_k], np.int64))], [scores, cells_out],
                                       name="peaks/top_k", axis=-1, largest=1, sorted=1))

    # The offset and refinement pairs at peaks: a table [N, C, 2, h*w] read at cells [N, C, T] -> [N, C, 2, T].
    def pair_table(maps: str, channels: int, name: str) -> str:
        return node("Reshape", [maps, const(f"{name}_shape", np.array([0, channels, 2, -1], np.int64))],
                    f"peaks/{name}_table")

    def gather_pairs(table: str, index: str, output: str) -> str:
        index = node("Unsqueeze", [index, const(f"{output}_axis", np.array([2], np.int64))], f"peaks/{output}_idx1")
        index = node("Expand", [index, const(f"{output}_pair", np.array([1, 1, 2, 1], np.int64))],
                     f"peaks/{output}_idx2")
        return node("GatherElements", [table, index], output, axis=3)

    source_cells = node("Gather", [cells_out, const("sources", np.array(sources, np.int64))],
                        "peaks/source_cells", axis=1)
    gather_pairs(pair_table(offsets, len(sources), "offsets"), source_cells, PEAK_OUTPUTS[2])
    vote_at_peaks(node, const, gather_pairs, heatmaps, pair_table(refinements, skeleton.num_keypoints, "refinements"),
                  cells_out, skeleton.num_keypoints, meta.map_width, meta.map_height, PEAK_OUTPUTS[3])

    dense_batch = next(o for o in graph.output if o.name == heatmaps).type.tensor_type.shape.dim[0]
    batch = dense_batch.dim_param if dense_batch.HasField("dim_param") else (dense_batch.dim_value or "batch")
    k, limbs = skeleton.num_keypoints, len(sources)
    peak_outputs = [helper.make_tensor_value_info(scores, TensorProto.FLOAT, [batch, k, top_k]),
                    helper.make_tensor_value_info(cells_out, TensorProto.INT64, [batch, k, top_k]),
                    helper.make_tensor_value_info(PEAK_OUTPUTS[2], TensorProto.FLOAT, [batch, limbs, 2, top_k]),
                    helper.make_tensor_value_info(PEAK_OUTPUTS[3], TensorProto.FLOAT, [batch, k, 2, top_k])]
    if not keep_dense:
        del graph.output[:]
    graph.output.extend(peak_outputs)

    names = tuple(o.name for o in graph.output)
    # The file's own decoder default must not ask for more peaks than the graph finds.
    decoder = replace(meta.decoder, top_k=min(meta.decoder.top_k, top_k))
    write_onnx_meta(out, replace(meta, output_names=names, peak_top_k=top_k, decoder=decoder))
    onnx.checker.check_model(out)
    return out


def vote_at_peaks(node, const, gather_pairs, heatmaps: str, refinements: str, cells: str, k: int, width: int,
                  height: int, output: str) -> None:
    """:func:`rtpose.decoder.regress_peaks`' votes at the top-k cells, in the graph: ``output [N, K, 2, T]``.

    The same steps as numpy's, one at a time (numpy takes all nine at once
    and sums them in its own order): for each step, the neighbour's
    heatmap value and refinement pair (from the table
    ``refinements [N, K, 2, h*w]``) are read at the peak cell plus the step
    (cell 0 and weight 0 where that lies outside the map).
    """
    heat = node("Reshape", [heatmaps, const("vote_heat_shape", np.array([0, k, -1], np.int64))],
                "peaks/vote_heat_table")
    w, h, zero = (const(f"vote_{n}", np.array(v, np.int64)) for n, v in (("width", width), ("height", height),
                                                                         ("zero", 0)))
    x = node("Mod", [cells, w], "peaks/vote_cell_x")
    y = node("Div", [cells, w], "peaks/vote_cell_y")
    low, high, radius2, no_weight = (const(f"vote_{n}", np.array(v, np.float32)) for n, v in (
        ("low", -REFINEMENT_LIMIT), ("high", REFINEMENT_LIMIT), ("radius2", VOTE_RADIUS ** 2), ("no_weight", 0)))
    pair_axis = const("vote_pair_axis", np.array([2], np.int64))
    numerator = total = None
    for dx, dy in VOTE_STEPS:
        step = f"{dx + 1}{dy + 1}"
        nx = node("Add", [x, const(f"vote_dx_{step}", np.array(dx, np.int64))], f"peaks/vote_nx_{step}")
        ny = node("Add", [y, const(f"vote_dy_{step}", np.array(dy, np.int64))], f"peaks/vote_ny_{step}")
        inside = node("And", [
            node("And", [node("GreaterOrEqual", [nx, zero], f"peaks/vote_x0_{step}"),
                         node("Less", [nx, w], f"peaks/vote_xw_{step}")], f"peaks/vote_inx_{step}"),
            node("And", [node("GreaterOrEqual", [ny, zero], f"peaks/vote_y0_{step}"),
                         node("Less", [ny, h], f"peaks/vote_yh_{step}")], f"peaks/vote_iny_{step}")],
            f"peaks/vote_inside_{step}")
        cell = node("Where", [inside, node("Add", [node("Mul", [ny, w], f"peaks/vote_row_{step}"), nx],
                                           f"peaks/vote_flat_{step}"), zero], f"peaks/vote_cell_{step}")
        pair = gather_pairs(refinements, cell, f"peaks/vote_refinement_{step}")              # [N, K, 2, T]
        move = node("Add", [node("Clip", [pair, low, high], f"peaks/vote_clip_{step}"),
                            const(f"vote_step_{step}", np.array([[dx], [dy]], np.float32))], f"peaks/vote_move_{step}")
        votes = inside
        if dx or dy:
            length2 = node("ReduceSum", [node("Mul", [move, move], f"peaks/vote_move2_{step}"), pair_axis],
                           f"peaks/vote_len2_{step}", keepdims=0)
            votes = node("And", [inside, node("Less", [length2, radius2], f"peaks/vote_near_{step}")],
                         f"peaks/vote_votes_{step}")
        value = node("GatherElements", [heat, cell], f"peaks/vote_heat_{step}", axis=2)
        weight = node("Where", [votes, node("Mul", [value, value], f"peaks/vote_h2_{step}"), no_weight],
                      f"peaks/vote_weight_{step}")
        term = node("Mul", [node("Unsqueeze", [weight, pair_axis], f"peaks/vote_weight_pair_{step}"), move],
                    f"peaks/vote_term_{step}")
        numerator = term if numerator is None else node("Add", [numerator, term], f"peaks/vote_sum_{step}")
        total = weight if total is None else node("Add", [total, weight], f"peaks/vote_total_{step}")
    total = node("Max", [total, const("vote_floor", np.array(VOTE_FLOOR, np.float32))], "peaks/vote_total_safe")
    node("Div", [numerator, node("Unsqueeze", [total, pair_axis], "peaks/vote_total_pair")], output)


def dense_maps_model(meta: ModelMeta, opset: int = 17) -> onnx.ModelProto:
    """A model whose inputs are the dense maps themselves (``<name>_in``), passed through to its outputs.

    With :func:`add_peak_outputs` it is the peak finder alone, for maps that
    come from elsewhere than a network: tests and benchmarks on encoded targets.
    """
    k, limbs = meta.skeleton.num_keypoints, len(meta.skeleton.directed_limbs)
    h, w = meta.map_height, meta.map_width
    channels = {"heatmaps": k, "offsets": 2 * limbs, "refinements": 2 * k}
    inputs = [helper.make_tensor_value_info(f"{n}_in", TensorProto.FLOAT, ["batch", c, h, w])
              for n, c in channels.items()]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", c, h, w]) for n, c in channels.items()]
    nodes = [helper.make_node("Identity", [f"{n}_in"], [n]) for n in channels]
    graph = helper.make_graph(nodes, "rtpose_dense_maps", inputs, outputs)
    # IR version 10: the onnxruntime releases rtpose supports do not all read newer ones.
    model = helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", opset)])
    write_onnx_meta(model, replace(meta, output_names=DENSE_OUTPUTS, peak_top_k=0))
    return model


def write_peak_model(source: str | Path, output: str | Path, top_k: int) -> Path:
    """:func:`add_peak_outputs` from file to file (``output`` may be ``source``)."""
    return rewrite_onnx(source, output, lambda model: add_peak_outputs(model, top_k, source=source))


def compare_peaks(dense_model: str | Path | onnx.ModelProto, top_k: int, batch: int = 2, seed: int = 0) -> str:
    """In-graph peaks against numpy's find_peaks on the same maps, on random pixels, as one line.

    Runs the model with dense and peak outputs through onnxruntime; raises
    ``RuntimeError`` where peaks or their refinements differ. A batch > 1
    also checks the dynamic batch.
    """
    import onnxruntime as ort

    from rtpose.decoder import find_peaks, regress_peaks
    from rtpose.fast_decoder import peaks_from_graph
    from rtpose.preprocess import network_input

    source = "model"
    if not isinstance(dense_model, onnx.ModelProto):
        source, dense_model = dense_model, load_onnx(dense_model)
    model = add_peak_outputs(dense_model, top_k, keep_dense=True, source=source)
    meta = read_onnx_meta(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    pixels = np.random.default_rng(seed).integers(0, 256, (batch, meta.input_height, meta.input_width, 3), np.uint8)
    named = dict(zip(meta.output_names, session.run(list(meta.output_names),
                                                    {meta.input_name: network_input(pixels, meta)})))
    threshold, total, worst = meta.decoder.heatmap_threshold, 0, 0.0
    for i in range(batch):
        want = find_peaks(named["heatmaps"][i], threshold, top_k)
        got, slot = peaks_from_graph(named["peak_scores"][i], named["peak_cells"][i], threshold, top_k, meta.map_width)
        if not (np.array_equal(want.kind, got.kind) and np.array_equal(want.cell, got.cell)
                and np.array_equal(want.score, got.score)):
            raise RuntimeError(f"in-graph peaks differ from numpy find_peaks on image {i} of the check batch")
        moves = regress_peaks(named["heatmaps"][i], named["refinements"][i], want).xy - want.cell
        difference = float(np.abs(moves - named["peak_refinements"][i][got.kind, :, slot]).max(initial=0))
        if difference > MOVE_TOLERANCE:
            raise RuntimeError(f"in-graph refinement votes differ from numpy's by {difference:.2g} map pixels "
                               f"on image {i} of the check batch")
        total, worst = total + len(got), max(worst, difference)
    return (f"in-graph peaks (top {top_k}) vs numpy find_peaks (onnxruntime), batch {batch}: {total} peaks, all equal;"
            f" refinement votes within {worst:.1g} map pixels")

