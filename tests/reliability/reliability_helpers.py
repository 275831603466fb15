"""Shared helpers of the reliability tests: small models, child processes, IR text builders."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

import ember
from ember import opset

ROOT = Path(__file__).resolve().parents[2]


def small_model(n: int = 64) -> ember.Model:
    """``relu(x @ W + b)`` with ``n x n`` f32 weights (big enough for a .bin worth mapping)."""
    rng = np.random.default_rng(0)
    x = opset.parameter([2, n], np.float32, name="x")
    w = opset.constant(rng.standard_normal((n, n)).astype(np.float32))
    b = opset.constant(rng.standard_normal((1, n)).astype(np.float32))
    y = opset.relu(opset.add(opset.matmul(x, w, False, False), b))
    return ember.Model([y], [x], "small")


def run_child(code: str, timeout: float = 60.0, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh Python process (a crash there is a failed test here, not a
    dead test run)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=env)


def loop_net(depth: int) -> tuple[str, bytes]:
    """An IR whose Loop bodies nest ``depth`` deep (each body holds the next Loop)."""
    weights = np.int64(1).tobytes() + np.bool_(True).tobytes()

    def net(level: int, tag: str) -> str:
        if level == 0:
            middle = """
              <layer id="2" name="add{L}" type="Add" version="opset1">
                <input><port id="0" precision="FP32"><dim>2</dim></port>
                       <port id="1" precision="FP32"><dim>2</dim></port></input>
                <output><port id="2" precision="FP32"><dim>2</dim></port></output>
              </layer>"""
            edges = """
              <edge from-layer="0" from-port="0" to-layer="2" to-port="0" />
              <edge from-layer="1" from-port="0" to-layer="2" to-port="1" />"""
        else:
            middle = """
              <layer id="2" name="loop{L}" type="Loop" version="opset5">
                <port_map>
                  <input external_port_id="2" internal_layer_id="0" />
                  <input external_port_id="3" internal_layer_id="1" />
                  <output external_port_id="4" internal_layer_id="5" />
                  <output external_port_id="-1" internal_layer_id="4" purpose="execution_condition" />
                </port_map>
                <back_edges><edge from-layer="5" to-layer="1" /></back_edges>
                <input><port id="0" precision="I64" /><port id="1" precision="BOOL" />
                       <port id="2" precision="FP32"><dim>2</dim></port>
                       <port id="3" precision="FP32"><dim>2</dim></port></input>
                <output><port id="4" precision="FP32"><dim>2</dim></port></output>
                {BODY}
              </layer>
              <layer id="6" name="n{L}" type="Const" version="opset1">
                <data element_type="i64" shape="" offset="0" size="8" />
                <output><port id="0" precision="I64" /></output>
              </layer>
              <layer id="7" name="c{L}" type="Const" version="opset1">
                <data element_type="boolean" shape="" offset="8" size="1" />
                <output><port id="0" precision="BOOL" /></output>
              </layer>""".replace("{BODY}", net(level - 1, "body"))
            edges = """
              <edge from-layer="6" from-port="0" to-layer="2" to-port="0" />
              <edge from-layer="7" from-port="0" to-layer="2" to-port="1" />
              <edge from-layer="0" from-port="0" to-layer="2" to-port="2" />
              <edge from-layer="1" from-port="0" to-layer="2" to-port="3" />"""
        out_port = 2 if level == 0 else 4
        return f"""<{tag} {'name="deep" version="11"' if tag == 'net' else ''}><layers>
              <layer id="0" name="a{level}" type="Parameter" version="opset1">
                <data shape="2" element_type="f32" />
                <output><port id="0" precision="FP32"><dim>2</dim></port></output>
              </layer>
              <layer id="1" name="b{level}" type="Parameter" version="opset1">
                <data shape="2" element_type="f32" />
                <output><port id="0" precision="FP32"><dim>2</dim></port></output>
              </layer>{middle.replace('{L}', str(level))}
              <layer id="3" name="k{level}" type="Const" version="opset1">
                <data element_type="boolean" shape="" offset="8" size="1" />
                <output><port id="0" precision="BOOL" /></output>
              </layer>
              <layer id="4" name="rc{level}" type="Result" version="opset1">
                <input><port id="0" precision="BOOL" /></input>
              </layer>
              <layer id="5" name="r{level}" type="Result" version="opset1">
                <input><port id="0" precision="FP32"><dim>2</dim></port></input>
              </layer>
            </layers><edges>{edges}
              <edge from-layer="3" from-port="0" to-layer="4" to-port="0" />
              <edge from-layer="2" from-port="{out_port}" to-layer="5" to-port="0" />
            </edges></{tag}>"""

    return '<?xml version="1.0"?>\n' + net(depth, "net"), weights


def counting_loop() -> ember.Model:
    """``x + n`` computed by a Loop of ``n`` iterations, ``n`` an input (a data-driven trip count)."""
    n = opset.parameter([], np.int64, name="n")
    x = opset.parameter([4], np.float32, name="x")
    bx = opset.parameter([4], np.float32, name="bx")
    step = opset.add(bx, opset.constant(np.ones(4, np.float32)))
    keep_going = opset.constant(np.array(True))
    body = ember.Model([step, keep_going], [bx], "body")
    loop = opset.loop(n, opset.constant(np.array(True)))
    loop.set_function(body)
    loop.set_special_body_ports([-1, 1])
    loop.set_merged_input(bx, x.output(0), step.output(0))
    out = loop.get_iter_value(step.output(0), -1)
    return ember.Model([out], [n, x], "counting_loop")
