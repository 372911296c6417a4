// tokenizers.js — the reference side of tests/bench/tokenizers: one measurement per process.
//   node tokenizers.js tiktoken FILE BYTES       seconds to encode the first BYTES with tiktoken gpt2
//   node tokenizers.js hf-encode JSON FILE BYTES  the same with HF tokenizers and a tokenizer.json
//   node tokenizers.js hf-train FILE OUT          train HF's default BpeTrainer (30000 tokens)
// Prints "seconds tokens cpu_seconds" (training: "seconds vocab").
const fs = require('fs');
const path = require('path');
const mods = process.env.KILN_NODE_MODULES || path.join(__dirname, '..', '..', 'third_party', 'node', 'node_modules');
const [cmd, a, b, c] = process.argv.slice(2);
const head = (file, bytes) => fs.readFileSync(file).subarray(0, +bytes).toString('utf8');
const now = () => Number(process.hrtime.bigint()) / 1e9;
const cpu = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1e6; };

async function main() {
  if (cmd === 'tiktoken') {
    const { get_encoding } = require(path.join(mods, 'tiktoken'));
    const enc = get_encoding('gpt2');
    const text = head(a, b);
    const t0 = now(), c0 = cpu();
    const ids = enc.encode(text, [], []);
    console.log((now() - t0).toFixed(4), ids.length, (cpu() - c0).toFixed(4));
  } else if (cmd === 'hf-encode') {
    const tk = require(path.join(mods, 'tokenizers'));
    const t = tk.Tokenizer.fromFile(a);
    const text = head(b, c);
    const t0 = now(), c0 = cpu();
    const e = await t.encode(text, null, { addSpecialTokens: false });
    console.log((now() - t0).toFixed(4), e.getIds().length, (cpu() - c0).toFixed(4));
  } else if (cmd === 'hf-train') {
    const tk = require(path.join(mods, 'tokenizers'));
    const t = new tk.Tokenizer(tk.BPE.init({}, []));
    t.setPreTokenizer(tk.byteLevelPreTokenizer(false, true));
    const t0 = now();
    t.train([a]);
    const s = now() - t0;
    t.save(b);
    console.log(s.toFixed(4), t.getVocabSize());
  }
}
main().catch(e => { console.error(e.message || e); process.exit(1); });
