// The lifecycle Model, Projector and Session share: a JS class whose C++ object owns one
// shared handle (ModelHandle, ProjectorHandle, SessionState), made once off the JS thread by a
// CreateWorker ("load" / "create"), and freed by dispose(). A dispose during the creation frees
// what the creation produces; workers keep their own reference, so nothing is freed under them.
//
// Derived (CRTP) provides `static constexpr ObjectTraits kTraits` and, optionally, OnDispose()
// (which stops work in flight).
#pragma once

#include <napi.h>

#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "addon.h"
#include "worker.h"

namespace cospot {

// How a native class names itself, and where its constructor is kept.
struct ObjectTraits {
  const char * class_name;    // "Model": the JS class
  const char * what;          // "model": how messages name it
  const char * create_verb;   // "load": the creating method
  const char * created_word;  // "loaded"
  const char * not_created_code;  // the code of a call before the creation is done
  Napi::FunctionReference AddonData::*constructor;
};

template <typename Derived, typename HandleType>
class NativeObject : public Napi::ObjectWrap<Derived> {
 public:
  using Base = NativeObject<Derived, HandleType>;
  using Method = Napi::Value (Derived::*)(const Napi::CallbackInfo &);

  explicit NativeObject(const Napi::CallbackInfo & info) : Napi::ObjectWrap<Derived>(info) {}

  // The C++ object behind a JS value, checked to be an instance of this class.
  static Derived * FromValue(Napi::Env env, Napi::Value value) {
    return UnwrapInstance<Derived>(env, value, GetAddonData(env).*Derived::kTraits.constructor, Derived::kTraits.class_name);
  }

  // The created handle; throws ERR_DISPOSED, or "not created yet", on the JS thread otherwise.
  std::shared_ptr<HandleType> Handle(Napi::Env env) const {
    ThrowIfDisposed(env);
    if (!handle_) {
      ThrowCoded(env, Derived::kTraits.not_created_code,
                 std::string("the ") + Derived::kTraits.what + " is not " + Derived::kTraits.created_word + " yet");
    }
    return handle_;
  }

 protected:
  // The JS class: `methods` (the creating one among them) and dispose().
  static Napi::Function DefineWith(Napi::Env env, std::initializer_list<std::pair<const char *, Method>> methods) {
    std::vector<typename Napi::ObjectWrap<Derived>::PropertyDescriptor> properties;
    for (const auto & [name, method] : methods) properties.push_back(Napi::ObjectWrap<Derived>::InstanceMethod(name, method));
    properties.push_back(Napi::ObjectWrap<Derived>::InstanceMethod("dispose", static_cast<Method>(&Base::Dispose)));
    return Napi::ObjectWrap<Derived>::DefineClass(env, Derived::kTraits.class_name, properties);
  }

  void ThrowIfDisposed(Napi::Env env) const {
    if (disposed_) ThrowCoded(env, code::kDisposed, std::string("the ") + Derived::kTraits.what + " has been disposed");
  }

  // Checks, at the start of load() / create(), that this is the first and only creation.
  void BeginCreate(Napi::Env env) {
    ThrowIfDisposed(env);
    if (creating_ || handle_) {
      throw Napi::Error::New(env, std::string(Derived::kTraits.create_verb) + "() may be called once per native " +
                                      Derived::kTraits.class_name);
    }
    creating_ = true;
  }

  void OnDispose() {}

  // Makes the handle off the JS thread: Run() sets created_. When the object was disposed
  // meanwhile, the new handle is freed at once and the promise rejects with ERR_DISPOSED.
  class CreateWorker : public OwnerWorker<Derived> {
   public:
    CreateWorker(Napi::Env env, const char * name, Derived * owner) : OwnerWorker<Derived>(env, name, owner) {}

   protected:
    Napi::Value Result(Napi::Env env) override {
      Base & owner = *this->owner_;
      if (owner.disposed_) {
        created_.reset();
        ThrowCoded(env, code::kDisposed, std::string("the ") + Derived::kTraits.what + " was disposed while it was being " +
                                             Derived::kTraits.created_word);
      }
      owner.handle_ = std::move(created_);
      return env.Undefined();
    }

    void OnSettle() override { static_cast<Base &>(*this->owner_).creating_ = false; }

    std::shared_ptr<HandleType> created_;
  };

  std::shared_ptr<HandleType> handle_;
  bool creating_ = false;
  bool disposed_ = false;

 private:
  Napi::Value Dispose(const Napi::CallbackInfo & info) {
    disposed_ = true;
    static_cast<Derived *>(this)->OnDispose();
    handle_.reset();  // workers and dependents keep their own reference until they go
    return info.Env().Undefined();
  }
};

}  // namespace cospot
