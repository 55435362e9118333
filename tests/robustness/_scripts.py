"""Hypothesis strategy composing whole single-GPU training scripts from the supported patterns."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

DEVICES = ("ternary", "cuda0_str", "cuda0_device", "flags", "int_id", "mps", "accelerator", "dot_cuda", "none")
STRUCTURES = ("toplevel", "main", "functions", "class")


@dataclass(frozen=True)
class Spec:
    """One drawn combination of patterns; ``render`` turns it into a script."""

    device: str
    structure: str
    data: str  # loader | tensors | synthetic
    model: str  # sequential | class | gan
    optimizer: str  # SGD | Adam | LBFGS
    amp: str  # none | cuda_amp | torch_amp
    accumulate: bool
    clip: str  # none | norm | value
    data_parallel: bool
    seed: bool
    prints: bool
    save: str  # none | state_dict | checkpoint | whole
    load: bool
    evaluate: bool
    early_stop: bool
    scheduler: bool
    move_style: str  # to | to_kw | assign


def _fix(spec: Spec) -> Spec:
    """Drop combinations real scripts never have (LBFGS with AMP, a GAN evaluated for accuracy)."""
    changes: dict = {}
    if spec.model == "gan":
        changes.update(optimizer="Adam", accumulate=False, evaluate=False, data_parallel=False)
    if spec.optimizer == "LBFGS" or changes.get("optimizer") == "LBFGS":
        changes.update(amp="none", accumulate=False, clip="none")
    if spec.data != "loader":
        changes.update(evaluate=False)
    return Spec(**{**spec.__dict__, **changes})


specs = st.builds(
    Spec,
    device=st.sampled_from(DEVICES),
    structure=st.sampled_from(STRUCTURES),
    data=st.sampled_from(("loader", "tensors", "synthetic")),
    model=st.sampled_from(("sequential", "class", "gan")),
    optimizer=st.sampled_from(("SGD", "Adam", "LBFGS")),
    amp=st.sampled_from(("none", "cuda_amp", "torch_amp")),
    accumulate=st.booleans(),
    clip=st.sampled_from(("none", "norm", "value")),
    data_parallel=st.booleans(),
    seed=st.booleans(),
    prints=st.booleans(),
    save=st.sampled_from(("none", "state_dict", "checkpoint", "whole")),
    load=st.booleans(),
    evaluate=st.booleans(),
    early_stop=st.booleans(),
    scheduler=st.booleans(),
    move_style=st.sampled_from(("to", "to_kw", "assign")),
).map(_fix)


def indent(lines: list[str], n: int = 1) -> list[str]:
    """Indent ``lines`` (which may hold embedded newlines) by ``n`` levels."""
    flat = [part for line in lines for part in line.split("\n")]
    return [("    " * n + line) if line else line for line in flat]


class _Writer:
    """Renders one Spec; ``p(name)`` spells state as ``self.name`` inside the class form."""

    def __init__(self, spec: Spec) -> None:
        self.s = spec
        self.in_class = False
        self.imports = {"import torch", "import torch.nn as nn"}

    def p(self, name: str) -> str:
        return f"self.{name}" if self.in_class else name

    def has_device(self) -> bool:
        return self.s.device not in ("dot_cuda", "none")

    def move(self, expr: str) -> str:
        if self.s.device == "none":
            return expr
        if self.s.device == "dot_cuda":
            return f"{expr}.cuda()"
        if self.s.device == "int_id" and self.s.move_style == "to_kw":
            return f"{expr}.cuda({self.p('device')})"
        if self.s.move_style == "to_kw":
            return f"{expr}.to(device={self.p('device')})"
        return f"{expr}.to({self.p('device')})"

    def new(self, call: str) -> str:
        """A tensor created on the script's device."""
        if self.has_device():
            return f"{call[:-1]}, device={self.p('device')})"
        return self.move(call)

    # -- setup ---------------------------------------------------------------------------
    def args_lines(self) -> list[str]:
        if self.s.device not in ("flags", "int_id"):
            return []
        self.imports.add("import argparse")
        lines = ['parser = argparse.ArgumentParser(description="toy trainer")',
                 'parser.add_argument("--epochs", type=int, default=2)',
                 'parser.add_argument("--lr", type=float, default=0.01)']
        if self.s.device == "flags":
            lines += ['parser.add_argument("--no-cuda", action="store_true", default=False)',
                      'parser.add_argument("--no-mps", action="store_true", default=False)']
        else:
            lines.append('parser.add_argument("--gpu", type=int, default=0)')
        return lines + ["args = parser.parse_args()"]

    def device_lines(self) -> list[str]:
        d = self.s.device
        if d == "ternary":
            return ['device = torch.device("cuda" if torch.cuda.is_available() else "cpu")']
        if d == "cuda0_str":
            return ['device = "cuda:0"']
        if d == "cuda0_device":
            return ['device = torch.device("cuda:0")']
        if d == "int_id":
            return ["device = args.gpu"]
        if d == "accelerator":
            return ['device = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else torch.device("cpu")']
        if d == "flags":
            return ["use_cuda = not args.no_cuda and torch.cuda.is_available()",
                    "use_mps = not args.no_mps and torch.backends.mps.is_available()",
                    "if use_cuda:", '    device = torch.device("cuda")',
                    "elif use_mps:", '    device = torch.device("mps")',
                    "else:", '    device = torch.device("cpu")']
        if d == "mps":
            return ["if torch.cuda.is_available():", '    device = torch.device("cuda")',
                    "elif torch.backends.mps.is_available():", '    device = torch.device("mps")',
                    "else:", '    device = torch.device("cpu")']
        return []

    def lr(self) -> str:
        return "args.lr" if self.s.device in ("flags", "int_id") else "0.01"

    def epochs(self) -> str:
        return "args.epochs" if self.s.device in ("flags", "int_id") else "2"

    def data_lines(self) -> list[str]:
        if self.s.data == "loader":
            self.imports.add("from torch.utils.data import DataLoader, TensorDataset")
            lines = ["dataset = TensorDataset(torch.randn(64, 8), torch.randint(0, 2, (64,)))",
                     "train_loader = DataLoader(dataset, batch_size=16, shuffle=True)"]
            if self.s.evaluate:
                lines += ["test_set = TensorDataset(torch.randn(32, 8), torch.randint(0, 2, (32,)))",
                          "test_loader = DataLoader(test_set, batch_size=16)"]
            return lines
        if self.s.data == "tensors":
            return ["inputs = torch.randn(64, 8)", "labels = torch.randint(0, 2, (64,))"]
        return []

    def model_lines(self) -> list[str]:
        s, lines = self.s, []
        self.imports.add("import torch.optim as optim")
        if s.model == "gan":
            lines += ["netG = " + self.placed("nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 8))", "netG"),
                      "netD = " + self.placed("nn.Sequential(nn.Linear(8, 1), nn.Sigmoid())", "netD"),
                      f"optG = optim.Adam(netG.parameters(), lr={self.lr()})",
                      f"optD = optim.Adam(netD.parameters(), lr={self.lr()})",
                      "criterion = nn.BCELoss()"]
        else:
            ctor = "Net()" if s.model == "class" else "nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))"
            lines.append("model = " + self.placed(ctor, "model"))
            if s.data_parallel:
                lines.append("model = nn.DataParallel(model)")
            kw = ", momentum=0.9" if s.optimizer == "SGD" else ""
            lines += [f"optimizer = optim.{s.optimizer}(model.parameters(), lr={self.lr()}{kw})",
                      "criterion = nn.CrossEntropyLoss()"]
            if s.scheduler:
                lines.append("scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)")
        if s.amp == "cuda_amp":
            lines.append("scaler = torch.cuda.amp.GradScaler()")
        elif s.amp == "torch_amp":
            lines.append('scaler = torch.amp.GradScaler("cuda")')
        if s.load and s.model != "gan":
            where = ", map_location=device" if self.has_device() else ""
            lines.append(f'model.load_state_dict(torch.load("init.pt"{where}))')
        return lines

    def placed(self, ctor: str, name: str) -> str:
        """The model construction, moved in the chosen style (or left on the CPU)."""
        if self.s.move_style == "assign" and self.s.device not in ("none",):
            return f"{ctor}\n{name} = {self.move(name)}"
        return self.move(ctor)

    # -- the training step -------------------------------------------------------------------
    def backward(self, loss: str) -> str:
        return f"{self.p('scaler')}.scale({loss}).backward()" if self.s.amp != "none" else f"{loss}.backward()"

    def step(self, opt: str) -> list[str]:
        if self.s.amp != "none":
            return [f"{self.p('scaler')}.step({self.p(opt)})"]
        return [f"{self.p(opt)}.step()"]

    def autocast(self) -> str | None:
        if self.s.amp == "cuda_amp":
            return "with torch.cuda.amp.autocast():"
        if self.s.amp == "torch_amp":
            return 'with torch.autocast(device_type="cuda", dtype=torch.float16):'
        return None

    def clip_lines(self) -> list[str]:
        s, model = self.s, self.p("model")
        if s.clip == "none":
            return []
        lines = [f"{self.p('scaler')}.unscale_({self.p('optimizer')})"] if s.amp != "none" else []
        if s.clip == "norm":
            return lines + [f"torch.nn.utils.clip_grad_norm_({model}.parameters(), max_norm=1.0)"]
        return lines + [f"nn.utils.clip_grad_value_({model}.parameters(), clip_value=0.5)"]

    def batch_lines(self) -> tuple[str, list[str]]:
        """The loop header and the lines that fetch one batch onto the device."""
        if self.s.data == "loader":
            loader = "train_loader"
            if self.s.model == "gan":
                return f"for idx, (real, _) in enumerate({loader}):", [f"real = {self.move('real')}"]
            return (f"for idx, (data, target) in enumerate({loader}):",
                    [f"data, target = {self.move('data')}, {self.move('target')}"])
        if self.s.data == "tensors":
            fetch = [f"data = {self.move('inputs[start:start + 16]')}",
                     f"target = {self.move('labels[start:start + 16]')}"]
            if self.s.model == "gan":
                fetch = [f"real = {self.move('inputs[start:start + 16]')}"]
            return "for idx, start in enumerate(range(0, 64, 16)):", fetch
        if self.s.model == "gan":
            return "for idx in range(4):", [f"real = {self.new('torch.randn(16, 8)')}"]
        return "for idx in range(4):", [f"data = {self.new('torch.randn(16, 8)')}",
                                        f"target = {self.new('torch.randint(0, 2, (16,))')}"]

    def single_step(self) -> list[str]:
        s, model, opt, crit = self.s, self.p("model"), self.p("optimizer"), self.p("criterion")
        if s.optimizer == "LBFGS":
            return ["def closure():", f"    {opt}.zero_grad()", f"    output = {model}(data)",
                    f"    loss = {crit}(output, target)", "    loss.backward()", "    return loss",
                    f"loss = {opt}.step(closure)"]
        forward = [f"output = {model}(data)", f"loss = {crit}(output, target)"]
        cast = self.autocast()
        lines = [] if s.accumulate else [f"{opt}.zero_grad()"]
        lines += [cast, *indent(forward)] if cast else forward
        if s.accumulate:
            lines += ["loss = loss / accum_steps", self.backward("loss"), "if (idx + 1) % accum_steps == 0:"]
            lines += indent(self.clip_lines() + self.step("optimizer") + self.update() + [f"{opt}.zero_grad()"])
        else:
            lines += [self.backward("loss"), *self.clip_lines(), *self.step("optimizer"), *self.update()]
        return lines

    def update(self) -> list[str]:
        return [f"{self.p('scaler')}.update()"] if self.s.amp != "none" else []

    def gan_step(self) -> list[str]:
        g, d, crit = self.p("netG"), self.p("netD"), self.p("criterion")
        ones, zeros = self.new("torch.ones(real.size(0), 1)"), self.new("torch.zeros(real.size(0), 1)")
        return [f"{self.p('optD')}.zero_grad()", f"loss_real = {crit}({d}(real), {ones})",
                self.backward("loss_real"), f"z = {self.new('torch.randn(real.size(0), 4)')}",
                f"fake = {g}(z)", f"loss_fake = {crit}({d}(fake.detach()), {zeros})",
                self.backward("loss_fake"), *self.step("optD"), f"{self.p('optG')}.zero_grad()",
                f"loss = {crit}({d}(fake), {ones})", self.backward("loss"), *self.step("optG"),
                *self.update()]

    def loop(self) -> list[str]:
        """One epoch over the data."""
        header, fetch = self.batch_lines()
        body = fetch + (self.gan_step() if self.s.model == "gan" else self.single_step())
        if self.s.prints:
            body += ["if idx % 2 == 0:", '    print(f"epoch {epoch} step {idx} loss {loss.item():.4f}")']
        if self.s.early_stop:
            body += ["if loss.item() < 0.01:", "    break"]
        return [header, *indent(body)]

    # -- whole script --------------------------------------------------------------------------
    def net_class(self) -> list[str]:
        return ["class Net(nn.Module):", "    def __init__(self):", "        super().__init__()",
                "        self.fc1 = nn.Linear(8, 16)", "        self.fc2 = nn.Linear(16, 2)", "",
                "    def forward(self, x):", "        return self.fc2(torch.relu(self.fc1(x)))"]

    def test_fn(self) -> list[str]:
        self.imports.add("import torch.nn.functional as F")
        params = "model, device, test_loader" if self.has_device() else "model, test_loader"
        return [f"def test({params}):", "    model.eval()", "    test_loss = 0.0", "    correct = 0",
                "    with torch.no_grad():", "        for data, target in test_loader:",
                f"            data, target = {self.move('data')}, {self.move('target')}",
                "            output = model(data)",
                '            test_loss += F.cross_entropy(output, target, reduction="sum").item()',
                "            correct += (output.argmax(dim=1) == target).sum().item()",
                "    test_loss /= len(test_loader.dataset)",
                '    print(f"test loss {test_loss:.4f} accuracy {correct / len(test_loader.dataset):.3f}")']

    def state_names(self) -> list[str]:
        s = self.s
        names = ["netG", "netD", "optG", "optD"] if s.model == "gan" else ["model", "optimizer"]
        names.append("criterion")
        if s.amp != "none":
            names.append("scaler")
        if self.has_device():
            names.append("device")
        return names

    def data_params(self) -> list[str]:
        return {"loader": ["train_loader"], "tensors": ["inputs", "labels"], "synthetic": []}[self.s.data]

    def after_epoch(self) -> list[str]:
        s, lines = self.s, []
        if s.scheduler and s.model != "gan":
            lines.append("scheduler.step()")
        if s.evaluate:
            lines.append("test(model, device, test_loader)" if self.has_device() else "test(model, test_loader)")
        return lines

    def save_lines(self) -> list[str]:
        s = self.s
        if s.save == "none":
            return []
        model, opt = ("netG", "optG") if s.model == "gan" else ("model", "optimizer")
        if s.save == "state_dict":
            return [f'torch.save({model}.state_dict(), "model.pt")']
        if s.save == "whole":
            return [f'torch.save({model}, "model_full.pt")']
        return [f'torch.save({{"model": {model}.state_dict(), "optimizer": {opt}.state_dict(), "epoch": epoch}}, "ckpt.pt")']

    def setup_lines(self) -> list[str]:
        lines = self.args_lines()
        if self.s.seed:
            self.imports.add("import random")
            lines += ["torch.manual_seed(0)", "random.seed(0)"]
        lines += self.device_lines() + self.data_lines() + self.model_lines()
        if self.s.accumulate:
            lines.append("accum_steps = 4")
        return lines

    def driver(self) -> list[str]:
        """Setup, the epoch loop in the chosen structure, then saves."""
        s, names = self.s, self.state_names()
        train_call: list[str]
        if s.structure == "functions":
            params = names + self.data_params() + (["accum_steps"] if s.accumulate else []) + ["epoch"]
            train_call = [f"train({', '.join(params)})"]
        elif s.structure == "class":
            ctor_args = names + (["accum_steps"] if s.accumulate else [])
            train_call = [f"trainer.train_epoch({', '.join(self.data_params() + ['epoch'])})"]
        else:
            train_call = self.loop()
        setup = self.setup_lines()
        if s.structure == "class":
            setup.append(f"trainer = Trainer({', '.join(ctor_args)})")
        return [*setup, f"for epoch in range(1, {self.epochs()} + 1):",
                *indent(train_call + self.after_epoch()), *self.save_lines()]

    def definitions(self) -> list[list[str]]:
        s, names, defs = self.s, self.state_names(), []
        if s.model == "class":
            defs.append(self.net_class())
        if s.evaluate:
            defs.append(self.test_fn())
        extra = ["accum_steps"] if s.accumulate else []
        if s.structure == "functions":
            params = names + self.data_params() + extra + ["epoch"]
            first = "netG.train()" if s.model == "gan" else "model.train()"
            defs.append([f"def train({', '.join(params)}):", f"    {first}", *indent(self.loop())])
        elif s.structure == "class":
            fields = names + extra
            init = [f"def __init__(self, {', '.join(fields)}):", *[f"    self.{n} = {n}" for n in fields]]
            self.in_class = True
            scaled = [line.replace("accum_steps", "self.accum_steps") for line in self.loop()]
            self.in_class = False
            method = [f"def train_epoch(self, {', '.join(self.data_params() + ['epoch'])}):", *indent(scaled)]
            defs.append(["class Trainer:", *indent(init), "", *indent(method)])
        return defs

    def render(self) -> str:
        driver = self.driver()
        defs = self.definitions()
        if self.s.structure != "toplevel":
            driver = ["def main():", *indent(driver), "", "", 'if __name__ == "__main__":', "    main()"]
        blocks = [sorted(self.imports), *defs, driver]
        return "\n\n\n".join("\n".join(indent(block, 0)) for block in blocks) + "\n"


def render(spec: Spec) -> str:
    """The script text for ``spec``."""
    return _Writer(spec).render()


scripts = specs.map(render)
