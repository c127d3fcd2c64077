/**
 * ChatTemplate (lib/procedure/chat.ts): a model's Jinja chat template rendered into prompt parts,
 * the user's text kept apart from the template's, and turn two as the continuation of turn one.
 * Expected parts are written out by hand from the templates in lib/models/chat-templates.ts.
 */
import assert from 'node:assert/strict';

import { ChainOfSpotError } from '../../lib/common/errors';
import type { Template as JinjaTemplate } from '@huggingface/jinja' with { 'resolution-mode': 'import' };

import { GEMMA3_TEMPLATE, INTERNVL_TEMPLATE, QWEN25_VL_TEMPLATE, QWEN3_VL_TEMPLATE } from '../../lib/models/chat-templates';
import { ChatTemplate, type ChatMessage } from '../../lib/procedure/chat';
import type { Prompt } from '../../lib/procedure/prompt';

// The template library itself, as transformers.js renders with it (a CommonJS build beside its ES module).
const { Template } = require('@huggingface/jinja') as { Template: typeof JinjaTemplate };

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

  it("gives the template's own rendering of the same conversation, with its image placeholder where an image part is", () => {
    // transformers passes a message as a list of image and text items, and each template writes
    // its family's placeholder for an image item; here the same messages go through ChatTemplate.
    const placeholders = [
      [QWEN25_VL_TEMPLATE, '<|vision_start|><|image_pad|><|vision_end|>'],
      [QWEN3_VL_TEMPLATE, '<|vision_start|><|image_pad|><|vision_end|>'],
      [INTERNVL_TEMPLATE, '<image>\n'],
      [GEMMA3_TEMPLATE, '<start_of_image>'],
    ] as const;
    const one: ChatMessage = { role: 'user', parts: [{ type: 'image', image: 'original' }, { type: 'text', text: '\nWhere is the cup?' }] };
    const two: ChatMessage = { role: 'user', parts: [{ type: 'text', text: 'The region is ' }, { type: 'image', image: 'roi' }, { type: 'text', text: '. What is in it?' }] };
    const answer = '[0.1, 0.2, 0.5, 0.6]';
    const items = (message: ChatMessage) => message.parts.map((part) => (part.type === 'image' ? { type: 'image' } : { type: 'text', text: (part as { text: string }).text }));
    for (const [source, placeholder] of placeholders) {
      const own = new Template(source).render({
        messages: [{ role: 'user', content: items(one) }, { role: 'assistant', content: answer }, { role: 'user', content: items(two) }],
        add_generation_prompt: true,
        bos_token: TOKENS.bos,
        eos_token: TOKENS.eos,
      });
      const template = new ChatTemplate(source, TOKENS);
      const text = (prompt: Prompt): string => prompt.map((part) => (part.type === 'image' ? placeholder : (part as { text: string }).text)).join('');
      assert.equal(text(template.prompt([one])) + answer + text(template.continuation([one], [two])), own);
    }
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
