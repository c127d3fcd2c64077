/**
 * ChatTemplate (lib/procedure/chat.ts): a model's Jinja chat template rendered into prompt parts,
 * the user's text kept apart from the template's, and turn two as the continuation of turn one.
 * Expected parts are written out by hand from the templates in lib/models/chat-templates.ts.
 */
import assert from 'node:assert/strict';

import { ChainOfSpotError } from '../../lib/common/errors';
import { GEMMA3_TEMPLATE, QWEN25_VL_TEMPLATE, QWEN3_VL_TEMPLATE } from '../../lib/models/chat-templates';
import { ChatTemplate, type ChatMessage } from '../../lib/procedure/chat';

const TOKENS = { bos: '<bos>', eos: '<eos>' };
const user = (question: string, image: 'original' | 'roi' = 'original'): ChatMessage => ({
  role: 'user',
  parts: [{ type: 'image', image }, { type: 'text', text: question }],
});
const isCode = (code: string) => (error: unknown) => error instanceof ChainOfSpotError && error.code === code;

describe('chat templates', () => {
  it("renders a conversation into template parts, the user's text and image parts", () => {
    const prompt = new ChatTemplate(QWEN25_VL_TEMPLATE, TOKENS).prompt([user('What is it?')]);
    assert.deepEqual(prompt, [
      { type: 'template', text: '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n' },
      { type: 'image', image: 'original' },
      { type: 'text', text: 'What is it?' },
      { type: 'template', text: '<|im_end|>\n<|im_start|>assistant\n' },
    ]);
  });

  it("keeps the user's text literal, special-looking markers and Jinja syntax included", () => {
    const question = 'a <|im_end|> and {{ bos_token }} and {% if x %}';
    const prompt = new ChatTemplate(QWEN3_VL_TEMPLATE, TOKENS).prompt([user(question)]);
    assert.deepEqual(
      prompt.filter((part) => part.type === 'text'),
      [{ type: 'text', text: question }],
    );
    assert.ok(prompt.every((part) => part.type !== 'template' || !part.text.includes('{{')));
  });

  it('writes the BOS text where the template asks for it', () => {
    const prompt = new ChatTemplate(GEMMA3_TEMPLATE, TOKENS).prompt([user('Q')]);
    assert.deepEqual(prompt[0], { type: 'template', text: '<bos><start_of_turn>user\n' });
    assert.deepEqual(prompt.at(-1), { type: 'template', text: '<end_of_turn>\n<start_of_turn>model\n' });
  });

  it("turn two continues turn one: the answer's end, the new message, the next opening", () => {
    const template = new ChatTemplate(QWEN3_VL_TEMPLATE, TOKENS);
    const continuation = template.continuation([user('Where?')], [user('Now?', 'roi')]);
    assert.deepEqual(continuation, [
      { type: 'template', text: '<|im_end|>\n<|im_start|>user\n' },
      { type: 'image', image: 'roi' },
      { type: 'text', text: 'Now?' },
      { type: 'template', text: '<|im_end|>\n<|im_start|>assistant\n' },
    ]);
  });

  it('refuses a template that renders turn one differently once the conversation goes on', () => {
    // Writes the number of messages first, as a template that rewrites history would.
    const rewriting = "{{- messages | length -}}{%- for m in messages -%}[{{ m.content }}]{%- endfor -%}{%- if add_generation_prompt -%}>{%- endif -%}";
    assert.throws(() => new ChatTemplate(rewriting, TOKENS).continuation([user('a')], [user('b', 'roi')]), isCode('ERR_MODEL_LOAD'));
  });

  it('a template that does not parse, or fails to render: ERR_MODEL_LOAD', () => {
    assert.throws(() => new ChatTemplate('{% for %}', TOKENS), isCode('ERR_MODEL_LOAD'));
    const raising = "{{ raise_exception('no images here') }}";
    assert.throws(() => new ChatTemplate(raising, TOKENS).prompt([user('q')]), isCode('ERR_MODEL_LOAD'));
  });
});
